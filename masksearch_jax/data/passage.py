"""The one record type every corpus reader yields, and the error they raise."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Passage:
  """One retrievable unit of text: a paragraph or a fixed-size chunk of a page.

  Attributes:
    id: Unique within its corpus (string, as in wiki-18 and KILT).
    title: The page title the passage belongs to.
    text: The passage text, without the title.
  """

  id: str
  title: str
  text: str


class CorpusFormatError(ValueError):
  """A record in a corpus or benchmark file is malformed.

  The message always starts with `path:line:` so the record can be found.
  """

  def __init__(self, path: str, line: int | None, reason: str):
    self.path = str(path)
    self.line = line
    self.reason = reason
    where = f"{self.path}:{line}" if line is not None else self.path
    super().__init__(f"{where}: {reason}")
