"""Streaming readers for every corpus format a user may bring, all yielding `Passage`.

Formats (the `format` argument of `read_corpus`):

  wiki18              DPR / Search-R1 `wiki-18.jsonl[.gz]`: `{"id", "contents"}`, where
                      `contents` is `"Title"` in double quotes, a newline, then the text.
  wikiextractor_json  `wikiextractor --json` output tree (`OUT/AA/wiki_00[.bz2]`, ...), one
                      page a line: `{"id", "revid", "url", "title", "text"}`.
  wikiextractor_doc   Plain wikiextractor output: `<doc id=".." url=".." title="..">` blocks
                      whose first line is the title, closed by `</doc>`.
  kilt                KILT knowledge source: `{"_id", "wikipedia_id", "wikipedia_title",
                      "text": [str], ...}` one page a line; `text[0]` is the title.
  masksearch_dir      MaskSearch's input: a directory with one file per page (file name =
                      title, see `masksearch_filename`), one paragraph a line.
  jsonl               Plain `{"id", "title", "text"}` lines (extra fields ignored).
  tfds                TFDS `wikipedia`, addressed as `tfds:wikipedia/20230601.en` with an
                      optional `@DATA_DIR` suffix. Only read when already prepared.

Page formats (wikiextractor, KILT, MaskSearch, TFDS) give one passage per non-empty
paragraph, with ids `{page_id}-{k}` (`{title}-{k}` where pages have no id).

Files ending in `.gz` or `.bz2` are decompressed on the fly. Lines are decoded one at a time
so that an error names the exact line. A malformed record raises `CorpusFormatError`
(`path:line: reason`) unless `skip_bad=True`, which skips it and counts it in `ReadStats`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import re
import zlib
from typing import Any, Callable, Iterable, Iterator

from masksearch_jax.data.bad_records import BadRecord, ReadStats, SkipOrRaise
from masksearch_jax.data.passage import CorpusFormatError, Passage

FORMATS = ("wiki18", "wikiextractor_json", "wikiextractor_doc", "kilt", "masksearch_dir",
           "jsonl", "tfds")

TFDS_PREFIX = "tfds:"

_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".json.bz2")
_EXTRACTOR_DIR = re.compile(r"[A-Z]{2}")
_EXTRACTOR_FILE = re.compile(r"wiki_(\d+)(?:\.bz2)?")
_UTF8_BOM = b"\xef\xbb\xbf"
_DOC_OPEN = re.compile(r"<doc\s(.*)>\s*")
_DOC_ID = re.compile(r'\bid="([^"]*)"')
# Titles are written unescaped by wikiextractor, so they may contain quotes: take everything
# up to the quote that is followed by another attribute or by the end of the tag.
_DOC_TITLE = re.compile(r'\btitle="(.*?)"(?=\s+[\w-]+="|\s*$)')
_BLANK_LINES = re.compile(r"\n\s*\n")
_FILENAME_ESCAPE = re.compile(r"%(25|2F|2E|00)", re.IGNORECASE)
_MAX_FILENAME_BYTES = 255

_KILT_SECTION = "Section::::"
_KILT_BULLET = "BULLET::::"


# ---------------------------------------------------------------------------------------------
# Public entry points.


def read_corpus(path: str | os.PathLike,
                format: str = "auto",  # pylint: disable=redefined-builtin
                *,
                skip_bad: bool = False,
                stats: ReadStats | None = None,
                max_words: int | None = None,
                data_dir: str | None = None) -> Iterator[Passage]:
  """Streams the passages of a corpus in any supported format.

  The path and format are checked when this is called (so a missing file or an undetectable
  format fails at once); records are read lazily while iterating, one line at a time.

  Args:
    path: A file, a directory of files, or `tfds:NAME[@DATA_DIR]`.
    format: One of `FORMATS`, or "auto" to detect it from the path (see `detect_format`).
    skip_bad: Skip malformed records instead of raising; they are counted in `stats` and a
      warning per file says how many were skipped.
    stats: Filled in while iterating, if given.
    max_words: If set, a passage longer than this many words is split into consecutive
      chunks of at most `max_words` words (whitespace-normalised) with ids `{id}-c{j}`,
      like DPR's 100-word passages.
    data_dir: TFDS data directory (for `tfds`; an `@DATA_DIR` suffix in `path` wins).

  Returns:
    An iterator of passages, in file order.

  Raises:
    FileNotFoundError: The path does not exist, or the TFDS dataset is not prepared.
    ValueError: Unknown format name, or `max_words` < 1.
    CorpusFormatError: The format cannot be detected, or (while iterating) a record is
      malformed and `skip_bad` is off.
  """
  if max_words is not None and max_words < 1:
    raise ValueError(f"max_words must be at least 1, got {max_words}")
  stats = ReadStats() if stats is None else stats
  policy = SkipOrRaise(skip_bad, stats)
  path_str = os.fspath(path)
  if format == "auto":
    format = detect_format(path_str)
  if format not in FORMATS:
    raise ValueError(f"unknown corpus format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")
  if format == "tfds":
    passages = _read_tfds(path_str, data_dir, policy)
  else:
    if not os.path.exists(path_str):
      raise FileNotFoundError(f"corpus not found: {path_str}")
    passages = _read_files(_corpus_files(path_str, format), _FILE_READERS[format], policy)
  if max_words is not None:
    passages = _chunk(passages, max_words)
  return _count(passages, stats)


def detect_format(path: str | os.PathLike) -> str:
  """Guesses the format of a corpus from its path and first record.

  `tfds:` paths are TFDS; a directory laid out like wikiextractor output (`AA/wiki_00`, ...)
  is wikiextractor JSON or plain by its first line; a directory of `.jsonl`/`.json` files is
  judged by its first record; any other directory is a MaskSearch directory. A file is judged
  by its first record: `contents` means wiki18, `wikipedia_title` KILT, `revid` or `url`
  wikiextractor JSON, `title` and `text` plain jsonl, and a `<doc` line wikiextractor plain.
  An empty file is reported as jsonl (it has no passages in any format).

  Args:
    path: As for `read_corpus`.

  Returns:
    One of `FORMATS`.

  Raises:
    FileNotFoundError: The path does not exist.
    CorpusFormatError: The format cannot be decided.
  """
  path = os.fspath(path)
  if path.startswith(TFDS_PREFIX):
    return "tfds"
  if not os.path.exists(path):
    raise FileNotFoundError(f"corpus not found: {path}")
  if os.path.isdir(path):
    extractor_files = _wikiextractor_files(path)
    if extractor_files:
      return _detect_wikiextractor(path, extractor_files)
    files = _listed_files(path)
    if not files:
      raise _undetectable(path, "empty directory")
    if all(f.endswith(_JSONL_SUFFIXES) for f in files):
      for f in files:
        first = _first_line(f)
        if first is not None:
          return _detect_from_line(f, *first)
      return "jsonl"
    return "masksearch_dir"
  first = _first_line(path)
  if first is None:
    return "jsonl"
  return _detect_from_line(path, *first)


def masksearch_filename(title: str) -> str:
  """The file name that holds page `title` in a `masksearch_dir` corpus.

  `%`, `/` and NUL become `%25`, `%2F` and `%00`, and a leading `.` becomes `%2E` (so no page
  is hidden or named `..`); `masksearch_title` undoes this. The empty title is `%`. A name
  longer than 255 UTF-8 bytes is cut and given a hash suffix, which cannot be undone.

  Args:
    title: A page title.

  Returns:
    A safe file name.
  """
  if not title:
    return "%"
  name = title.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
  if name.startswith("."):
    name = "%2E" + name[1:]
  encoded = name.encode("utf-8", errors="surrogatepass")
  if len(encoded) > _MAX_FILENAME_BYTES:
    digest = hashlib.sha1(encoded).hexdigest()[:16]
    head = encoded[:_MAX_FILENAME_BYTES - len(digest) - 1].decode("utf-8", errors="ignore")
    name = f"{head}~{digest}"
  return name


def masksearch_title(filename: str) -> str:
  """The page title of a `masksearch_dir` file name; the inverse of `masksearch_filename`."""
  if filename == "%":
    return ""
  return _FILENAME_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), filename)


# ---------------------------------------------------------------------------------------------
# Files and lines.


def _open_binary(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rb")
  if path.endswith(".bz2"):
    return bz2.open(path, "rb")
  return open(path, "rb")


def _numbered_lines(path: str) -> Iterator[tuple[int, bytes]]:
  """Yields `(line_number, raw_line)` from 1, decompressing by suffix, BOM removed."""
  compressed = path.endswith((".gz", ".bz2"))
  line_no = 0
  with _open_binary(path) as f:
    lines = iter(f)
    while True:
      try:
        raw = next(lines)
      except StopIteration:
        return
      except (EOFError, OSError, zlib.error) as e:
        if not compressed:
          raise
        raise CorpusFormatError(path, line_no + 1, f"corrupt or truncated compressed data ({e})") from e
      line_no += 1
      if line_no == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
      yield line_no, raw


def _decode(raw: bytes) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadRecord("undecodable", f"undecodable bytes: not UTF-8 at byte {e.start} "
                    f"({raw[e.start:e.start + 4]!r})") from e


def _first_line(path: str) -> tuple[int, str] | None:
  """The first non-blank line of a file (number and text), or None if there is none."""
  for line_no, raw in _numbered_lines(path):
    if raw.isspace():
      continue
    try:
      return line_no, _decode(raw).strip()
    except BadRecord as e:
      raise _undetectable(path, f"line {line_no}: {e.reason}") from e
  return None


def _listed_files(directory: str) -> list[str]:
  """Non-hidden regular files directly in `directory`, sorted by name."""
  with os.scandir(directory) as entries:
    return sorted(e.path for e in entries if not e.name.startswith(".") and e.is_file())


def _all_files(directory: str) -> list[str]:
  """Non-hidden regular files anywhere under `directory`, sorted by relative path."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
  return sorted(found, key=lambda p: _natural_key(os.path.relpath(p, directory)))


def _natural_key(relpath: str) -> tuple:
  # wiki_9 < wiki_10 when a tool writes more than two digits.
  return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
               for part in re.split(r"(\d+)", relpath))


def _wikiextractor_files(directory: str) -> list[str]:
  """The `XX/wiki_NN` files of a wikiextractor tree (or of one `XX` directory), else []."""
  with os.scandir(directory) as entries:
    subdirs = sorted(e.path for e in entries if e.is_dir() and _EXTRACTOR_DIR.fullmatch(e.name))
  candidates = [f for d in subdirs for f in _listed_files(d)] or _listed_files(directory)
  files = [f for f in candidates if _EXTRACTOR_FILE.fullmatch(os.path.basename(f))]
  return files if files and len(files) == len(candidates) else []


def _corpus_files(path: str, format: str) -> list[str]:  # pylint: disable=redefined-builtin
  if os.path.isfile(path):
    if format == "masksearch_dir":
      raise ValueError(f"the masksearch_dir format needs a directory, got the file {path}")
    return [path]
  if format == "masksearch_dir":
    return _listed_files(path)
  return _all_files(path)


def _read_files(files: list[str], read_file: Callable[[str, SkipOrRaise], Iterator[Passage]],
                policy: SkipOrRaise) -> Iterator[Passage]:
  for path in files:
    yield from read_file(path, policy)
    policy.end_file(path)


def _undetectable(path: str, why: str) -> CorpusFormatError:
  return CorpusFormatError(path, None, f"cannot detect the corpus format ({why}); pass "
                           f"format= one of: {', '.join(FORMATS)}")


def _detect_wikiextractor(path: str, files: list[str]) -> str:
  for f in files:
    first = _first_line(f)
    if first is None:
      continue
    if first[1].startswith("{"):
      return "wikiextractor_json"
    if first[1].startswith("<doc"):
      return "wikiextractor_doc"
    raise _undetectable(path, f"{f}:{first[0]} starts with neither '{{' nor '<doc'")
  raise _undetectable(path, "wikiextractor layout but every file is empty")


def _detect_from_line(path: str, line_no: int, line: str) -> str:
  if line.startswith("<doc"):
    return "wikiextractor_doc"
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise _undetectable(path, f"line {line_no} is not JSON: {e.msg}") from e
  if not isinstance(record, dict):
    raise _undetectable(path, f"line {line_no} is a JSON {_json_type(record)}, not an object")
  if "contents" in record:
    return "wiki18"
  if "wikipedia_title" in record:
    return "kilt"
  if "revid" in record or "url" in record:
    return "wikiextractor_json"
  if "title" in record and "text" in record:
    return "jsonl"
  raise _undetectable(path, f"line {line_no} has fields {sorted(record)[:10]}")


# ---------------------------------------------------------------------------------------------
# Record fields.


def _json_type(value: Any) -> str:
  if isinstance(value, bool):
    return "boolean"
  if value is None:
    return "null"
  if isinstance(value, (int, float)):
    return "number"
  return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def _json_object(raw: bytes) -> dict:
  text = _decode(raw)
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise BadRecord("bad_json", f"bad JSON: {e.msg} at column {e.colno}") from e
  if not isinstance(record, dict):
    raise BadRecord("not_object", f"expected a JSON object, got a {_json_type(record)}")
  return record


def _field(record: dict, name: str) -> Any:
  try:
    return record[name]
  except KeyError:
    raise BadRecord("missing_field", f"missing field {name!r}") from None


def _str_field(record: dict, name: str) -> str:
  value = _field(record, name)
  if not isinstance(value, str):
    raise BadRecord("wrong_type", f"field {name!r} must be a string, got a {_json_type(value)}")
  return value


def _id_field(record: dict, name: str) -> str:
  """An id: a non-empty string, or an integer (some dumps write numeric ids)."""
  value = _field(record, name)
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  if not isinstance(value, str):
    raise BadRecord("wrong_type", f"field {name!r} must be a string, got a {_json_type(value)}")
  if not value.strip():
    raise BadRecord("empty_id", f"field {name!r} is empty")
  return value


def _page_passages(page_id: str, title: str, paragraphs: Iterable[str]) -> list[Passage]:
  """One passage per non-empty paragraph; a first paragraph equal to the title is dropped."""
  passages = []
  for paragraph in paragraphs:
    paragraph = paragraph.strip()
    if not paragraph or (not passages and paragraph == title):
      continue
    passages.append(Passage(f"{page_id}-{len(passages)}", title, paragraph))
  return passages


# ---------------------------------------------------------------------------------------------
# One reader per format: `(path, policy) -> Iterator[Passage]`.


def _read_json_lines(path: str, policy: SkipOrRaise,
                     parse: Callable[[dict], list[Passage]]) -> Iterator[Passage]:
  for line_no, raw in _numbered_lines(path):
    if raw.isspace():
      continue
    try:
      passages = parse(_json_object(raw))
    except BadRecord as e:
      policy.bad(path, line_no, e)
      continue
    yield from passages


def _parse_wiki18(record: dict) -> list[Passage]:
  passage_id = _id_field(record, "id")
  contents = _str_field(record, "contents")
  title, newline, text = contents.partition("\n")
  if not newline:
    # No title line (a pyserini-style `{"id", "contents"}` collection): all of it is text.
    return [Passage(passage_id, "", contents)]
  if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
    title = title[1:-1]
  return [Passage(passage_id, title, text)]


def _parse_jsonl(record: dict) -> list[Passage]:
  return [Passage(_id_field(record, "id"), _str_field(record, "title"), _str_field(record, "text"))]


def _parse_wikiextractor_json(record: dict) -> list[Passage]:
  page_id = _id_field(record, "id")
  title = _str_field(record, "title")
  return _page_passages(page_id, title, _str_field(record, "text").split("\n"))


def _parse_kilt(record: dict) -> list[Passage]:
  page_id = _id_field(record, "wikipedia_id")
  title = _str_field(record, "wikipedia_title")
  text = _field(record, "text")
  if not isinstance(text, list):
    raise BadRecord("wrong_type", f"field 'text' must be an array of strings, got a {_json_type(text)}")
  paragraphs = []
  for i, paragraph in enumerate(text):
    if not isinstance(paragraph, str):
      raise BadRecord("wrong_type", f"field 'text' must be an array of strings; item {i} is a "
                      f"{_json_type(paragraph)}")
    if i == 0 or paragraph.startswith(_KILT_SECTION):
      continue
    if paragraph.startswith(_KILT_BULLET):
      paragraph = paragraph[len(_KILT_BULLET):]
      paragraph = paragraph[2:] if paragraph.startswith("- ") else paragraph
    paragraphs.append(paragraph)
  # text[0] is the title, so the title check of `_page_passages` must not drop a paragraph.
  passages = []
  for paragraph in paragraphs:
    paragraph = paragraph.strip()
    if paragraph:
      passages.append(Passage(f"{page_id}-{len(passages)}", title, paragraph))
  return passages


def _read_wiki18(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  return _read_json_lines(path, policy, _parse_wiki18)


def _read_jsonl(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  return _read_json_lines(path, policy, _parse_jsonl)


def _read_wikiextractor_json(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  return _read_json_lines(path, policy, _parse_wikiextractor_json)


def _read_kilt(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  return _read_json_lines(path, policy, _parse_kilt)


def _parse_doc_header(line: str) -> tuple[str, str]:
  match = _DOC_OPEN.fullmatch(line)
  if match is None:
    raise BadRecord("bad_doc", "malformed <doc> line (expected `<doc id=\"..\" title=\"..\">`)")
  attributes = match.group(1)
  id_match = _DOC_ID.search(attributes)
  if id_match is None or not id_match.group(1).strip():
    raise BadRecord("bad_doc", "<doc> line has no id attribute")
  title_match = _DOC_TITLE.search(attributes)
  if title_match is None:
    raise BadRecord("bad_doc", "<doc> line has no title attribute")
  return id_match.group(1), title_match.group(1)


def _read_wikiextractor_doc(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  """Reads `<doc ...>` blocks; a bad block is reported once and skipped up to its `</doc>`."""
  # State: outside a block (header is None and not skipping), inside a good block (header
  # set), or inside a block already reported as bad (skipping).
  header: tuple[int, str, str] | None = None
  body: list[str] = []
  skipping = False
  stray_reported = False
  for line_no, raw in _numbered_lines(path):
    is_open = raw.startswith(b"<doc")
    if is_open and (header is not None):
      policy.bad(path, header[0], BadRecord("unclosed_doc", "<doc> block is never closed by </doc>"))
    if is_open:
      header, body, skipping, stray_reported = None, [], False, False
      try:
        page_id, title = _parse_doc_header(_decode(raw).strip())
      except BadRecord as e:
        policy.bad(path, line_no, e)
        skipping = True
        continue
      header = (line_no, page_id, title)
      continue
    if raw.startswith(b"</doc>") and raw.strip() == b"</doc>":
      if header is not None:
        yield from _page_passages(header[1], header[2], body)
      elif not skipping and not stray_reported:
        policy.bad(path, line_no, BadRecord("outside_doc", "</doc> without an open <doc>"))
      header, body, skipping, stray_reported = None, [], False, False
      continue
    if skipping:
      continue
    if header is None:
      if not raw.isspace() and not stray_reported:
        # A run of stray lines is one bad record, reported at its first line.
        stray_reported = True
        policy.bad(path, line_no, BadRecord("outside_doc", "text outside a <doc> block"))
      continue
    try:
      body.append(_decode(raw))
    except BadRecord as e:
      policy.bad(path, line_no, e)
      header, body, skipping = None, [], True
  if header is not None:
    policy.bad(path, header[0], BadRecord("unclosed_doc", "<doc> block is never closed by </doc>"))


def _read_masksearch_file(path: str, policy: SkipOrRaise) -> Iterator[Passage]:
  name = os.path.basename(path)
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    policy.bad(path, None, BadRecord("undecodable", "file name is not UTF-8"))
    return
  title = masksearch_title(name)
  k = 0
  for line_no, raw in _numbered_lines(path):
    if raw.isspace():
      continue
    try:
      paragraph = _decode(raw).strip()
    except BadRecord as e:
      policy.bad(path, line_no, e)
      continue
    if paragraph:
      yield Passage(f"{title}-{k}", title, paragraph)
      k += 1


_FILE_READERS: dict[str, Callable[[str, SkipOrRaise], Iterator[Passage]]] = {
    "wiki18": _read_wiki18,
    "wikiextractor_json": _read_wikiextractor_json,
    "wikiextractor_doc": _read_wikiextractor_doc,
    "kilt": _read_kilt,
    "masksearch_dir": _read_masksearch_file,
    "jsonl": _read_jsonl,
}


def _parse_tfds_path(path: str, data_dir: str | None) -> tuple[str, str | None]:
  spec = path[len(TFDS_PREFIX):] if path.startswith(TFDS_PREFIX) else path
  name, at, suffix_dir = spec.partition("@")
  if not name:
    raise ValueError(f"no TFDS dataset name in {path!r} (expected tfds:wikipedia/20230601.en)")
  return name, (suffix_dir if at else data_dir)


def _read_tfds(path: str, data_dir: str | None, policy: SkipOrRaise) -> Iterator[Passage]:
  """Loads a prepared TFDS dataset (never downloads) and returns a passage iterator.

  The "line" of an error is the 1-based example number in the `train` split.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, data_dir = _parse_tfds_path(path, data_dir)
  try:
    dataset = tfds.load(name, split="train", download=False, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"TFDS has no dataset {name!r} (from {path!r})") from e
  except AssertionError as e:
    # TFDS signals "not prepared" with an AssertionError when download=False.
    where = data_dir or "the default TFDS data directory"
    raise FileNotFoundError(
        f"TFDS dataset {name} is not prepared in {where}; prepare it first with "
        f"`tfds build {name}{f' --data_dir={data_dir}' if data_dir else ''}` "
        f"(this reader never downloads). TFDS said: {e}") from e
  return _tfds_passages(path, tfds.as_numpy(dataset), policy)


def _tfds_passages(path: str, examples: Iterable[dict], policy: SkipOrRaise) -> Iterator[Passage]:
  for number, example in enumerate(examples, 1):
    try:
      title = _decode(example["title"]).strip()
      text = _decode(example["text"])
    except BadRecord as e:
      policy.bad(path, number, e)
      continue
    k = 0
    for paragraph in _BLANK_LINES.split(text):
      paragraph = paragraph.strip()
      if paragraph:
        yield Passage(f"{title}-{k}", title, paragraph)
        k += 1
  policy.end_file(path)


# ---------------------------------------------------------------------------------------------
# Post-processing.


def _chunk(passages: Iterable[Passage], max_words: int) -> Iterator[Passage]:
  for passage in passages:
    words = passage.text.split()
    if len(words) <= max_words:
      yield passage
      continue
    for j, start in enumerate(range(0, len(words), max_words)):
      yield Passage(f"{passage.id}-c{j}", passage.title, " ".join(words[start:start + max_words]))


def _count(passages: Iterable[Passage], stats: ReadStats) -> Iterator[Passage]:
  for passage in passages:
    stats.read += 1
    yield passage


__all__ = ["FORMATS", "ReadStats", "TFDS_PREFIX", "detect_format", "masksearch_filename",
           "masksearch_title", "read_corpus"]
