"""The `Retriever` interface: what every later stage uses to search.

Both the in-process Tantivy index and the HTTP client implement it, so rollouts,
data generation and evaluation never care where the index lives.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Iterable, Sequence


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


def search_excluding(retriever: Retriever, queries: Sequence[str], exclude_ids: Iterable[str],
                     top_k: int = 5) -> list[list[SearchHit]]:
  """Searches, leaving out some passages: each query still gets up to `top_k` other hits.

  RAMP agents use this so a search never returns the masked paragraph's own passage
  (that would copy the answer). It asks for `top_k + len(exclude_ids)` hits per query and
  drops the excluded ids.

  Args:
    retriever: The retriever.
    queries: The queries.
    exclude_ids: Passage ids never returned (for every query).
    top_k: Hits wanted per query.

  Returns:
    For each query, up to `top_k` hits, best first, none of them excluded.
  """
  exclude = frozenset(exclude_ids)
  return batch_search_excluding(retriever, queries, [exclude] * len(queries), top_k)


def batch_search_excluding(retriever: Retriever, queries: Sequence[str], exclude_ids: Sequence[Iterable[str]],
                           top_k: int = 5) -> list[list[SearchHit]]:
  """`search_excluding` with a set of excluded ids per query, in one batch call to the retriever."""
  if len(exclude_ids) != len(queries):
    raise ValueError(f"{len(queries)} queries but {len(exclude_ids)} sets of excluded ids")
  excludes = [frozenset(ids) for ids in exclude_ids]
  extra = max((len(ids) for ids in excludes), default=0)
  results = retriever.batch_search(list(queries), top_k + extra)
  return [[hit for hit in hits if hit.id not in exclude][:top_k] for hits, exclude in zip(results, excludes)]
