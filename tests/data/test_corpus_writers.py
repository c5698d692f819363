"""Tests for corpus_writers: round trips through every reader, layout, atomic replacement."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import pathlib

import pytest

from masksearch_jax.data import corpus_readers, corpus_writers
from masksearch_jax.data.corpus_readers import read_corpus
from masksearch_jax.data.passage import Passage

PASSAGES = [
    Passage("p0", "Anarchism", "Anarchism is a political philosophy."),
    Passage("p1", "Anarchism", "It is anti-authoritarian, with \"quotes\" and a\ttab."),
    Passage("p2", "AC/DC", "An Australian rock band."),
    Passage("p3", '"Weird Al" Yankovic', "An American singer; 100% parody."),
    Passage("p4", "Zürich 日本", "Ünïcödé text: 東京."),
    Passage("p5", ".hack", "A video game series."),
    Passage("p6", "Anarchism", "A later, separate page with the same title."),
]

PAGE_FORMATS = ["wikiextractor_json", "wikiextractor_doc", "kilt", "masksearch_dir"]


def _title_text(passages):
  return [(p.title, p.text) for p in passages]


def _siblings(path: pathlib.Path) -> list[str]:
  return sorted(os.listdir(path.parent))


@pytest.mark.parametrize("fmt,name", [
    ("jsonl", "c.jsonl"), ("jsonl", "c.jsonl.gz"), ("jsonl", "c.jsonl.bz2"),
    ("wiki18", "wiki-18.jsonl"), ("wiki18", "wiki-18.jsonl.gz"),
])
def test_passage_per_line_round_trip_is_exact(tmp_path, fmt, name):
  path = tmp_path / name
  summary = corpus_writers.write_corpus(PASSAGES, path, fmt)
  assert summary == corpus_writers.WriteSummary(str(path), 7, 7, 1)
  assert list(read_corpus(path, fmt)) == PASSAGES
  assert corpus_readers.detect_format(path) == fmt
  assert list(read_corpus(path)) == PASSAGES


def test_wiki18_keeps_newlines_in_text(tmp_path):
  passages = [Passage("0", "T", "line one\nline two")]
  corpus_writers.write_wiki18(passages, tmp_path / "w.jsonl")
  assert list(read_corpus(tmp_path / "w.jsonl")) == passages


def test_wiki18_bytes_match_the_release_shape(tmp_path):
  corpus_writers.write_wiki18([Passage("1", "Aaron", "Aaron is a prophet.")], tmp_path / "w.jsonl.gz")
  with gzip.open(tmp_path / "w.jsonl.gz", "rt", encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert [json.loads(line) for line in lines] == [{"id": "1", "contents": '"Aaron"\nAaron is a prophet.'}]


@pytest.mark.parametrize("fmt,kwargs", [
    ("wikiextractor_json", {}), ("wikiextractor_json", {"compress": True}),
    ("wikiextractor_doc", {}), ("wikiextractor_doc", {"compress": True, "pages_per_file": 2}),
    ("kilt", {}), ("masksearch_dir", {}),
])
def test_page_format_round_trip(tmp_path, fmt, kwargs):
  name = "kilt.json" if fmt == "kilt" else "out"
  path = tmp_path / name
  summary = corpus_writers.write_corpus(PASSAGES, path, fmt, **kwargs)
  assert (summary.passages, summary.pages) == (7, 6)
  for read_format in (fmt, "auto"):
    got = list(read_corpus(path, read_format))
    if fmt == "masksearch_dir":
      # Pages come back in file-name order, and the two "Anarchism" runs share one file.
      assert sorted(_title_text(got)) == sorted(_title_text(PASSAGES))
      assert len({p.id for p in got}) == len(got)
      assert [p.id for p in got if p.title == "Anarchism"] == ["Anarchism-0", "Anarchism-1", "Anarchism-2"]
    else:
      assert _title_text(got) == _title_text(PASSAGES)
      assert [p.id for p in got] == ["0-0", "0-1", "1-0", "2-0", "3-0", "4-0", "5-0"]
  assert corpus_readers.detect_format(path) == fmt


def test_wikiextractor_layout_and_bytes(tmp_path):
  passages = [Passage(str(i), f"Page {i}", f"Text {i}.") for i in range(205)]
  summary = corpus_writers.write_wikiextractor_json(passages, tmp_path / "out", pages_per_file=2)
  assert summary == corpus_writers.WriteSummary(str(tmp_path / "out"), 205, 205, 103)
  assert sorted(os.listdir(tmp_path / "out")) == ["AA", "AB"]
  assert sorted(os.listdir(tmp_path / "out" / "AA")) == [f"wiki_{i:02d}" for i in range(100)]
  assert sorted(os.listdir(tmp_path / "out" / "AB")) == ["wiki_00", "wiki_01", "wiki_02"]
  first = (tmp_path / "out" / "AA" / "wiki_00").read_text("utf-8").splitlines()
  assert [json.loads(line) for line in first] == [
      {"id": str(i), "revid": "", "url": f"https://en.wikipedia.org/wiki?curid={i}",
       "title": f"Page {i}", "text": f"Text {i}."} for i in range(2)
  ]
  assert [p.title for p in read_corpus(tmp_path / "out")] == [p.title for p in passages]


def test_wikiextractor_doc_bytes_and_bz2(tmp_path):
  passages = [Passage("a", "Anarchism", "First."), Passage("b", "Anarchism", "Second.")]
  corpus_writers.write_wikiextractor_doc(passages, tmp_path / "out", compress=True)
  assert os.listdir(tmp_path / "out" / "AA") == ["wiki_00.bz2"]
  text = bz2.decompress((tmp_path / "out" / "AA" / "wiki_00.bz2").read_bytes()).decode("utf-8")
  assert text == ('<doc id="0" url="https://en.wikipedia.org/wiki?curid=0" title="Anarchism">\n'
                  "Anarchism\n\nFirst.\nSecond.\n</doc>\n")


def test_kilt_record_shape(tmp_path):
  corpus_writers.write_kilt([Passage("a", "A", "Letter."), Passage("b", "A", "Vowel.")], tmp_path / "k.json")
  record = json.loads((tmp_path / "k.json").read_text("utf-8"))
  assert {k: record[k] for k in ("_id", "wikipedia_id", "wikipedia_title", "text")} == {
      "_id": "0", "wikipedia_id": "0", "wikipedia_title": "A", "text": ["A\n", "Letter.\n", "Vowel.\n"]}


def test_masksearch_dir_file_names(tmp_path):
  summary = corpus_writers.write_masksearch_dir(PASSAGES, tmp_path / "pages")
  assert (summary.passages, summary.pages, summary.files) == (7, 6, 5)
  assert sorted(os.listdir(tmp_path / "pages")) == sorted(
      ["Anarchism", "AC%2FDC", '"Weird Al" Yankovic', "Zürich 日本", "%2Ehack"])
  assert (tmp_path / "pages" / "Anarchism").read_text("utf-8").splitlines() == [
      PASSAGES[0].text, PASSAGES[1].text, PASSAGES[6].text]


def test_page_formats_flatten_line_breaks_and_drop_empty_passages(tmp_path):
  passages = [Passage("a", "T", "two\nlines\r\nhere"), Passage("b", "T", "   "),
              Passage("c", "T", " padded ")]
  for fmt in PAGE_FORMATS:
    path = tmp_path / fmt
    summary = corpus_writers.write_corpus(passages, path, fmt)
    assert (summary.passages, summary.pages) == (2, 1), fmt
    assert _title_text(read_corpus(path, fmt)) == [("T", "two lines here"), ("T", "padded")], fmt


@pytest.mark.parametrize("fmt", ["jsonl", "wiki18", *PAGE_FORMATS])
def test_empty_input(tmp_path, fmt):
  path = tmp_path / "out"
  summary = corpus_writers.write_corpus([], path, fmt)
  assert (summary.passages, summary.pages) == (0, 0)
  assert path.exists()
  assert list(read_corpus(path, fmt)) == []


# ---------------------------------------------------------------------------------------------
# Overwriting and interrupted writes.


@pytest.mark.parametrize("fmt", ["jsonl", "wiki18", *PAGE_FORMATS])
def test_refuses_to_overwrite_unless_asked(tmp_path, fmt):
  path = tmp_path / "out"
  corpus_writers.write_corpus(PASSAGES[:1], path, fmt)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    corpus_writers.write_corpus(PASSAGES[2:3], path, fmt)
  assert _title_text(read_corpus(path, fmt)) == _title_text(PASSAGES[:1])
  corpus_writers.write_corpus(PASSAGES[2:3], path, fmt, overwrite=True)
  assert _title_text(read_corpus(path, fmt)) == _title_text(PASSAGES[2:3])
  assert _siblings(path) == ["out"]  # No temporary or moved-aside copies left behind.


def _failing(passages, after: int):
  for i, passage in enumerate(passages):
    if i == after:
      raise RuntimeError("interrupted")
    yield passage


@pytest.mark.parametrize("fmt", ["jsonl", "wiki18", *PAGE_FORMATS])
def test_interrupted_write_leaves_nothing(tmp_path, fmt):
  path = tmp_path / "out"
  with pytest.raises(RuntimeError, match="interrupted"):
    corpus_writers.write_corpus(_failing(PASSAGES, after=4), path, fmt)
  assert _siblings(path) == []


@pytest.mark.parametrize("fmt", ["jsonl.gz", "wikiextractor_json"])
def test_interrupted_overwrite_keeps_the_old_output(tmp_path, fmt):
  fmt, _, suffix = fmt.partition(".")
  path = tmp_path / ("out." + suffix if suffix else "out")
  corpus_writers.write_corpus(PASSAGES[:2], path, fmt)
  with pytest.raises(RuntimeError):
    corpus_writers.write_corpus(_failing(PASSAGES, after=3), path, fmt, overwrite=True)
  assert _title_text(read_corpus(path, fmt)) == _title_text(PASSAGES[:2])
  assert _siblings(path) == [path.name]


def test_overwrite_replaces_a_file_with_a_directory(tmp_path):
  path = tmp_path / "out"
  corpus_writers.write_jsonl(PASSAGES, path)
  corpus_writers.write_masksearch_dir(PASSAGES[:1], path, overwrite=True)
  assert path.is_dir() and os.listdir(path) == ["Anarchism"]
  assert _siblings(path) == ["out"]


def test_creates_missing_parent_directories(tmp_path):
  path = tmp_path / "a" / "b" / "c.jsonl"
  corpus_writers.write_jsonl(PASSAGES[:1], path)
  assert list(read_corpus(path)) == PASSAGES[:1]


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="pages_per_file"):
    corpus_writers.write_wikiextractor_json(PASSAGES, tmp_path / "o", pages_per_file=0)
  with pytest.raises(ValueError, match="no writer for format 'tfds'"):
    corpus_writers.write_corpus(PASSAGES, tmp_path / "o", "tfds")
  assert os.listdir(tmp_path) == []


def test_round_trip_with_max_words_and_skip_bad_after_writing(tmp_path):
  # A written corpus is clean: reading it with skip_bad skips nothing.
  long = Passage("long", "L", " ".join(["w"] * 25))
  corpus_writers.write_wikiextractor_doc([long, *PASSAGES], tmp_path / "out")
  stats = corpus_readers.ReadStats()
  got = list(read_corpus(tmp_path / "out", skip_bad=True, stats=stats, max_words=10))
  assert [p.id for p in got[:3]] == ["0-0-c0", "0-0-c1", "0-0-c2"]
  assert stats.skipped == 0 and stats.read == len(got) == 3 + len(PASSAGES)
