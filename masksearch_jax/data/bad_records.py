"""Malformed records in the files readers stream: skip and count them, or raise.

A reader's parser raises `BadRecord(kind, reason)` for a malformed record; the reader hands it
to its `SkipOrRaise` with the file and the place in it (a line number, a label such as
"record 17", or both), which raises it as a `CorpusFormatError` (`path:line: label: reason`) or,
with `skip_bad`, counts it in `ReadStats` and goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

from masksearch_jax.data.passage import CorpusFormatError


@dataclasses.dataclass
class ReadStats:
  """What a reader has read so far; filled in while iterating.

  Attributes:
    read: Records yielded (passages after any chunking, examples, trajectories).
    skipped: Malformed records skipped (only non-zero with `skip_bad=True`).
    first_error: The message of the first skipped record, `path:line: reason`.
    skipped_by_reason: Skipped records per kind, e.g. `{"bad_json": 3, "missing_field": 1}`.
    files: Files (or TFDS datasets) read to the end.
  """

  read: int = 0
  skipped: int = 0
  first_error: str | None = None
  skipped_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  files: int = 0


class BadRecord(Exception):
  """A record is malformed; the reader adds the file and the place in it.

  Attributes:
    kind: A short name of what is wrong, the key of `ReadStats.skipped_by_reason`.
    reason: What is wrong, for the error message.
  """

  def __init__(self, kind: str, reason: str):
    super().__init__(reason)
    self.kind = kind
    self.reason = reason


class SkipOrRaise:
  """Raises or counts malformed records, as `skip_bad` asks; one policy may read many files.

  Args:
    skip_bad: Skip and count malformed records instead of raising.
    stats: Where skipped records and finished files are counted.
    warn_each: Log every skipped record; otherwise `end_file` logs how many the file had.
  """

  def __init__(self, skip_bad: bool, stats: ReadStats, *, warn_each: bool = False):
    self.skip_bad = skip_bad
    self.stats = stats
    self.warn_each = warn_each
    self.file_skipped = 0

  def bad(self, path: str | os.PathLike, line: int | None, err: BadRecord, *,
          label: str | None = None) -> None:
    """Raises `err` as a `CorpusFormatError`, or counts it when skipping.

    Args:
      path: The file the record is in.
      line: The record's line, if it has one.
      err: What is wrong.
      label: Where the record is when a line does not say it, e.g. "record 17"; it prefixes
        the reason.

    Raises:
      CorpusFormatError: Not skipping; chained to what made the record bad.
    """
    error = CorpusFormatError(str(path), line, f"{label}: {err.reason}" if label else err.reason)
    if not self.skip_bad:
      raise error from err.__cause__
    self.stats.skipped += 1
    self.stats.skipped_by_reason[err.kind] += 1
    if self.stats.first_error is None:
      self.stats.first_error = str(error)
    self.file_skipped += 1
    if self.warn_each:
      logging.warning("skipped %s", error)

  def end_file(self, path: str | os.PathLike) -> None:
    """Counts a file read to the end (and warns how many of its records were skipped)."""
    self.stats.files += 1
    if self.file_skipped and not self.warn_each:
      logging.warning("skipped %d malformed records in %s", self.file_skipped, path)
    self.file_skipped = 0
