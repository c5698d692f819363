"""The `Retriever` interface: what every later stage uses to search.

Both the in-process Tantivy index and the HTTP client implement it, so rollouts,
data generation and evaluation never care where the index lives.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class SearchHit:
  """One retrieved passage with its BM25 score."""

  id: str
  title: str
  text: str
  score: float

  @property
  def contents(self) -> str:
    """The wiki-18 / Search-R1 `contents` field: quoted title, newline, text."""
    return f'"{self.title}"\n{self.text}'

  def to_search_r1(self, with_score: bool = True) -> dict:
    """This hit in Search-R1's `/retrieve` response shape."""
    document = {"id": self.id, "contents": self.contents, "title": self.title, "text": self.text}
    if with_score:
      return {"document": document, "score": self.score}
    return document


class Retriever(abc.ABC):
  """Searches a passage collection. Any string is a valid query."""

  @abc.abstractmethod
  def batch_search(self, queries: Sequence[str], top_k: int = 5) -> list[list[SearchHit]]:
    """Returns, for each query, up to `top_k` hits, best first."""

  def search(self, query: str, top_k: int = 5) -> list[SearchHit]:
    """Returns up to `top_k` hits for one query, best first."""
    return self.batch_search([query], top_k)[0]

  def close(self) -> None:
    """Releases resources (threads, connections). Safe to call twice."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
