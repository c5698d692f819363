"""Writers that put a stream of `Passage`s on disk in the real corpus formats.

Each writer has a matching format in `corpus_readers` and writes what it reads:

  write_jsonl               `{"id", "title", "text"}` lines; `.gz`/`.bz2` by suffix.
  write_wiki18              `{"id", "contents": "\"Title\"\ntext"}` lines (wiki-18 / Search-R1).
  write_wikiextractor_json  `OUT/AA/wiki_00` ... one `{"id","revid","url","title","text"}` page a line.
  write_wikiextractor_doc   The same tree with `<doc id url title>` blocks.
  write_kilt                KILT knowledge source lines; `text[0]` is the title.
  write_masksearch_dir      One file per page title, one paragraph a line.

Page formats group consecutive passages with the same title into one page and write one
paragraph per passage, so a line break inside a passage becomes a space there (reading back
would otherwise give two passages), surrounding whitespace is dropped, and empty passages are
left out. Page ids are a running integer from 0.

Every writer builds its output under a hidden temporary sibling and renames it into place at
the end, so an interrupted write never leaves a partial file or directory under the target
name, and refuses to replace an existing target unless `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
from typing import Callable, Iterable, Iterator

from masksearch_jax.data.atomic_files import atomic_output, atomic_text, open_text
from masksearch_jax.data.corpus_readers import masksearch_filename
from masksearch_jax.data.passage import Passage

_FILES_PER_DIR = 100  # wikiextractor's wiki_00 .. wiki_99
_MAX_EXTRACTOR_DIRS = 26 * 26  # AA .. ZZ


@dataclasses.dataclass(frozen=True)
class WriteSummary:
  """What a writer wrote.

  Attributes:
    path: The file or directory written.
    passages: Passages written (page formats leave out empty ones).
    pages: Pages written (equal to `passages` for passage-per-line formats).
    files: Files written.
  """

  path: str
  passages: int
  pages: int
  files: int


def _compression_of(path: pathlib.Path) -> str | None:
  if path.name.endswith(".gz"):
    return "gz"
  if path.name.endswith(".bz2"):
    return "bz2"
  return None


def _write_lines_file(lines: Iterable[str], path: str | os.PathLike, *,
                      overwrite: bool) -> tuple[str, int]:
  """Writes one line per item of `lines` atomically; compression follows the suffix."""
  target = pathlib.Path(path)
  count = 0
  with atomic_text(target, overwrite=overwrite, compression=_compression_of(target), compresslevel=6) as f:
    for line in lines:
      f.write(line)
      f.write("\n")
      count += 1
  return str(target), count


def _json_line(record: dict) -> str:
  return json.dumps(record, ensure_ascii=False)


def _one_line(text: str) -> str:
  if "\n" in text or "\r" in text:
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
  return text.strip()


def _pages(passages: Iterable[Passage]) -> Iterator[tuple[str, list[str]]]:
  """`(title, paragraphs)` for each run of consecutive passages with the same title."""
  for title, group in itertools.groupby(passages, key=lambda p: p.title):
    paragraphs = [line for line in (_one_line(p.text) for p in group) if line]
    if paragraphs:
      yield _one_line(title), paragraphs


# ---------------------------------------------------------------------------------------------
# Passage-per-line formats.


def write_jsonl(passages: Iterable[Passage], path: str | os.PathLike, *,
                overwrite: bool = False) -> WriteSummary:
  """Writes `{"id", "title", "text"}` lines (`.gz` or `.bz2` suffix: compressed).

  Args:
    passages: The passages, written in order and unchanged.
    path: The output file.
    overwrite: Replace an existing file.

  Returns:
    What was written.
  """
  lines = (_json_line({"id": p.id, "title": p.title, "text": p.text}) for p in passages)
  target, count = _write_lines_file(lines, path, overwrite=overwrite)
  return WriteSummary(target, count, count, 1)


def write_wiki18(passages: Iterable[Passage], path: str | os.PathLike, *,
                 overwrite: bool = False) -> WriteSummary:
  """Writes wiki-18 lines, `{"id", "contents": "\\"Title\\"\\ntext"}` (`.jsonl` or `.jsonl.gz`).

  A line break in a title would end the title line early, so it becomes a space.

  Args:
    passages: The passages, written in order.
    path: The output file.
    overwrite: Replace an existing file.

  Returns:
    What was written.
  """
  lines = (_json_line({"id": p.id, "contents": f'"{_one_line(p.title)}"\n{p.text}'})
           for p in passages)
  target, count = _write_lines_file(lines, path, overwrite=overwrite)
  return WriteSummary(target, count, count, 1)


# ---------------------------------------------------------------------------------------------
# Page formats.


def write_kilt(passages: Iterable[Passage], path: str | os.PathLike, *,
               overwrite: bool = False) -> WriteSummary:
  """Writes a KILT knowledge source: one page a line, `text[0]` the title.

  Paragraphs end in "\\n" as in the real file. `_id` and `wikipedia_id` are the page number.

  Args:
    passages: The passages; consecutive ones with the same title form a page.
    path: The output file (`.json`; `.gz`/`.bz2` suffix: compressed).
    overwrite: Replace an existing file.

  Returns:
    What was written.
  """
  counts = {"passages": 0}

  def lines() -> Iterator[str]:
    for page_id, (title, paragraphs) in enumerate(_pages(passages)):
      counts["passages"] += len(paragraphs)
      yield _json_line({
          "_id": str(page_id),
          "wikipedia_id": str(page_id),
          "wikipedia_title": title,
          "text": [title + "\n"] + [p + "\n" for p in paragraphs],
          "anchors": [],
          "categories": "",
      })

  target, pages = _write_lines_file(lines(), path, overwrite=overwrite)
  return WriteSummary(target, counts["passages"], pages, 1)


def _extractor_dir_name(index: int) -> str:
  if index >= _MAX_EXTRACTOR_DIRS:
    raise ValueError(f"more than {_MAX_EXTRACTOR_DIRS * _FILES_PER_DIR} wikiextractor files; "
                     "raise pages_per_file")
  return chr(ord("A") + index // 26) + chr(ord("A") + index % 26)


def _page_url(page_id: int) -> str:
  return f"https://en.wikipedia.org/wiki?curid={page_id}"


def _json_page(page_id: int, title: str, paragraphs: list[str]) -> str:
  record = {"id": str(page_id), "revid": "", "url": _page_url(page_id), "title": title,
            "text": "\n".join(paragraphs)}
  return _json_line(record) + "\n"


def _doc_page(page_id: int, title: str, paragraphs: list[str]) -> str:
  # wikiextractor's own layout: header, title line, blank line, paragraphs, footer.
  body = "\n".join(paragraphs)
  return f'<doc id="{page_id}" url="{_page_url(page_id)}" title="{title}">\n{title}\n\n{body}\n</doc>\n'


def _write_wikiextractor(passages: Iterable[Passage], out_dir: str | os.PathLike, *,
                         render: Callable[[int, str, list[str]], str], pages_per_file: int,
                         compress: bool, overwrite: bool) -> WriteSummary:
  if pages_per_file < 1:
    raise ValueError(f"pages_per_file must be at least 1, got {pages_per_file}")
  num_passages = num_pages = num_files = 0
  with atomic_output(out_dir, overwrite=overwrite, directory=True) as tmp:
    with contextlib.ExitStack() as stack:
      f = None
      for page_id, (title, paragraphs) in enumerate(_pages(passages)):
        if page_id % pages_per_file == 0:
          stack.close()
          subdir = tmp / _extractor_dir_name(num_files // _FILES_PER_DIR)
          subdir.mkdir(exist_ok=True)
          name = f"wiki_{num_files % _FILES_PER_DIR:02d}" + (".bz2" if compress else "")
          f = stack.enter_context(open_text(subdir / name, compression="bz2" if compress else None))
          num_files += 1
        f.write(render(page_id, title, paragraphs))
        num_pages += 1
        num_passages += len(paragraphs)
  return WriteSummary(str(out_dir), num_passages, num_pages, num_files)


def write_wikiextractor_json(passages: Iterable[Passage], out_dir: str | os.PathLike, *,
                             pages_per_file: int = 1000, compress: bool = False,
                             overwrite: bool = False) -> WriteSummary:
  """Writes `wikiextractor --json` output: `OUT/AA/wiki_00` ... `wiki_99`, `OUT/AB/...`.

  Each line is a page `{"id", "revid", "url", "title", "text"}` with its paragraphs joined by
  "\\n" (the title is not repeated in `text`, as in wikiextractor 3). `revid` is "".

  Args:
    passages: The passages; consecutive ones with the same title form a page.
    out_dir: The output directory.
    pages_per_file: Pages per `wiki_NN` file (wikiextractor splits by bytes instead).
    compress: Write `wiki_NN.bz2` files, like `wikiextractor -c`.
    overwrite: Replace an existing directory.

  Returns:
    What was written.
  """
  return _write_wikiextractor(passages, out_dir, render=_json_page, pages_per_file=pages_per_file,
                              compress=compress, overwrite=overwrite)


def write_wikiextractor_doc(passages: Iterable[Passage], out_dir: str | os.PathLike, *,
                            pages_per_file: int = 1000, compress: bool = False,
                            overwrite: bool = False) -> WriteSummary:
  """Writes plain wikiextractor output: `<doc id url title>` blocks in the `AA/wiki_00` tree.

  Each block holds the title line, a blank line and one paragraph a line, then `</doc>`.
  As in wikiextractor, the title attribute is not escaped.

  Args:
    passages: The passages; consecutive ones with the same title form a page.
    out_dir: The output directory.
    pages_per_file: Pages per `wiki_NN` file.
    compress: Write `wiki_NN.bz2` files.
    overwrite: Replace an existing directory.

  Returns:
    What was written.
  """
  return _write_wikiextractor(passages, out_dir, render=_doc_page, pages_per_file=pages_per_file,
                              compress=compress, overwrite=overwrite)


def write_masksearch_dir(passages: Iterable[Passage], out_dir: str | os.PathLike, *,
                         overwrite: bool = False) -> WriteSummary:
  """Writes MaskSearch's input layout: one file per page title, one paragraph a line.

  File names come from `corpus_readers.masksearch_filename`: `%` `/` and NUL are
  percent-encoded (`%25`, `%2F`, `%00`) and a leading `.` becomes `%2E`, which the reader
  undoes. A title seen again later (not adjacent) is appended to its page's file. On a
  case-insensitive file system, titles differing only in case share a file.

  Args:
    passages: The passages; consecutive ones with the same title form a page.
    out_dir: The output directory.
    overwrite: Replace an existing directory.

  Returns:
    What was written.
  """
  num_passages = num_pages = 0
  names: set[str] = set()
  with atomic_output(out_dir, overwrite=overwrite, directory=True) as tmp:
    for title, paragraphs in _pages(passages):
      name = masksearch_filename(title)
      with open(tmp / name, "a", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(paragraphs) + "\n")
      names.add(name)
      num_pages += 1
      num_passages += len(paragraphs)
  return WriteSummary(str(out_dir), num_passages, num_pages, len(names))


WRITERS: dict[str, Callable[..., WriteSummary]] = {
    "jsonl": write_jsonl,
    "wiki18": write_wiki18,
    "wikiextractor_json": write_wikiextractor_json,
    "wikiextractor_doc": write_wikiextractor_doc,
    "kilt": write_kilt,
    "masksearch_dir": write_masksearch_dir,
}


def write_corpus(passages: Iterable[Passage], path: str | os.PathLike,
                 format: str,  # pylint: disable=redefined-builtin
                 **kwargs) -> WriteSummary:
  """Writes `passages` with the writer for `format` (a key of `WRITERS`, named as in the readers).

  Args:
    passages: The passages.
    path: The output file or directory.
    format: One of `WRITERS`.
    **kwargs: Passed to the writer (`overwrite`, `pages_per_file`, `compress`).

  Returns:
    What was written.
  """
  try:
    writer = WRITERS[format]
  except KeyError:
    raise ValueError(f"no writer for format {format!r}; expected one of {', '.join(WRITERS)}") from None
  return writer(passages, path, **kwargs)
