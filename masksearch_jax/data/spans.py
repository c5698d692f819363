"""The salient-span record shared by extractors, the masking sampler and span scorers."""

from __future__ import annotations

import dataclasses

# What a span is. 'number' covers numbers with or without a unit ("1,234 km").
SPAN_KINDS = ("date", "year", "number", "name", "title", "term")


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Span:
  """A salient span of a paragraph: `text == paragraph[start:end]`.

  Attributes:
    start: Character offset where the span starts.
    end: Character offset just past the span.
    text: The span's text.
    kind: One of SPAN_KINDS.
  """

  start: int
  end: int
  text: str
  kind: str

  @property
  def num_words(self) -> int:
    return len(self.text.split())
