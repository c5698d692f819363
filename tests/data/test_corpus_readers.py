"""Tests for corpus_readers: real-format samples, malformed records, skip_bad, detection."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import pathlib

import pytest

from masksearch_jax.data import corpus_readers
from masksearch_jax.data.corpus_readers import ReadStats, read_corpus
from masksearch_jax.data.passage import CorpusFormatError, Passage


def _write(path: pathlib.Path, data: bytes | str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, str):
    data = data.encode("utf-8")
  if path.name.endswith(".gz"):
    data = gzip.compress(data)
  elif path.name.endswith(".bz2"):
    data = bz2.compress(data)
  path.write_bytes(data)
  return path


def _jsonl(*records: dict | str) -> str:
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _where(path: pathlib.Path, line: int) -> str:
  return f"{path}:{line}: "


# ---------------------------------------------------------------------------------------------
# Samples in the shapes of the real releases.

WIKI18 = _jsonl(
    {"id": "1", "contents": '"Aaron"\nAaron is a prophet, high priest, and the brother of Moses.'},
    {"id": "2", "contents": '"Aaron"\nHe was a descendant of Levi.\nSecond line kept.'},
    {"id": "3", "contents": '""Weird Al" Yankovic"\nAn American singer.'},
)

EXTRACTOR_JSON = _jsonl(
    {"id": "12", "revid": "1", "url": "https://en.wikipedia.org/wiki?curid=12", "title": "Anarchism",
     "text": "Anarchism\n\nAnarchism is a political philosophy.\nIt is anti-authoritarian.\n"},
    {"id": "25", "revid": "2", "url": "https://en.wikipedia.org/wiki?curid=25", "title": "Autism",
     "text": "Autism is a developmental disorder."},
)

EXTRACTOR_DOC = """\
<doc id="12" url="https://en.wikipedia.org/wiki?curid=12" title="Anarchism">
Anarchism

Anarchism is a political philosophy.
It is anti-authoritarian.
</doc>
<doc id="39" url="https://en.wikipedia.org/wiki?curid=39" title=""Weird Al" Yankovic">
"Weird Al" Yankovic

An American singer.
</doc>
"""

KILT = _jsonl({
    "_id": "290", "wikipedia_id": "290", "wikipedia_title": "A",
    "text": ["A\n", "A is the first letter.\n", "Section::::History.\n",
             "It comes from aleph.\n", "BULLET::::- Alpha\n", "BULLET::::Beta\n"],
    "anchors": [], "categories": "Letters", "history": {"pageid": 290},
})


def test_wiki18_sample(tmp_path):
  path = _write(tmp_path / "wiki-18.jsonl", WIKI18)
  assert list(read_corpus(path, "wiki18")) == [
      Passage("1", "Aaron", "Aaron is a prophet, high priest, and the brother of Moses."),
      Passage("2", "Aaron", "He was a descendant of Levi.\nSecond line kept."),
      Passage("3", '"Weird Al" Yankovic', "An American singer."),
  ]


def test_wiki18_without_title_line_is_all_text(tmp_path):
  path = _write(tmp_path / "c.jsonl", _jsonl({"id": 7, "contents": "just text"}))
  assert list(read_corpus(path, "wiki18")) == [Passage("7", "", "just text")]


@pytest.mark.parametrize("name", ["wiki-18.jsonl.gz", "wiki-18.jsonl.bz2"])
def test_wiki18_compressed(tmp_path, name):
  path = _write(tmp_path / name, WIKI18)
  assert [p.id for p in read_corpus(path)] == ["1", "2", "3"]


def test_wikiextractor_json_sample(tmp_path):
  _write(tmp_path / "out" / "AA" / "wiki_00", EXTRACTOR_JSON)
  got = list(read_corpus(tmp_path / "out", "wikiextractor_json"))
  assert got == [
      Passage("12-0", "Anarchism", "Anarchism is a political philosophy."),
      Passage("12-1", "Anarchism", "It is anti-authoritarian."),
      Passage("25-0", "Autism", "Autism is a developmental disorder."),
  ]


def test_wikiextractor_doc_sample(tmp_path):
  _write(tmp_path / "out" / "AA" / "wiki_00.bz2", EXTRACTOR_DOC)
  got = list(read_corpus(tmp_path / "out", "wikiextractor_doc"))
  assert got == [
      Passage("12-0", "Anarchism", "Anarchism is a political philosophy."),
      Passage("12-1", "Anarchism", "It is anti-authoritarian."),
      Passage("39-0", '"Weird Al" Yankovic', "An American singer."),
  ]


def test_wikiextractor_tree_order_across_directories(tmp_path):
  def page(i):
    return _jsonl({"id": str(i), "revid": "", "url": "", "title": f"T{i}", "text": f"p{i}"})
  # Written out of order on purpose; read back as AA/wiki_00, AA/wiki_01, AB/wiki_00.
  _write(tmp_path / "out" / "AB" / "wiki_00", page(3))
  _write(tmp_path / "out" / "AA" / "wiki_01", page(2))
  _write(tmp_path / "out" / "AA" / "wiki_00", page(1))
  assert [p.title for p in read_corpus(tmp_path / "out")] == ["T1", "T2", "T3"]


def test_kilt_sample(tmp_path):
  path = _write(tmp_path / "kilt_knowledgesource.json", KILT)
  assert list(read_corpus(path, "kilt")) == [
      Passage("290-0", "A", "A is the first letter."),
      Passage("290-1", "A", "It comes from aleph."),
      Passage("290-2", "A", "Alpha"),
      Passage("290-3", "A", "Beta"),
  ]


def test_masksearch_dir_sample(tmp_path):
  _write(tmp_path / "pages" / "Zebra", "Zebras are striped.\n\nThey live in Africa.\n")
  _write(tmp_path / "pages" / "AC%2FDC", "A rock band.\n")
  _write(tmp_path / "pages" / ".DS_Store", b"\x00\x01junk")
  assert list(read_corpus(tmp_path / "pages", "masksearch_dir")) == [
      Passage("AC/DC-0", "AC/DC", "A rock band."),
      Passage("Zebra-0", "Zebra", "Zebras are striped."),
      Passage("Zebra-1", "Zebra", "They live in Africa."),
  ]


def test_jsonl_extra_fields_and_blank_lines(tmp_path):
  path = _write(tmp_path / "c.jsonl", _jsonl({"id": "a", "title": "T", "text": "x", "score": 3}) +
                "\n   \n" + _jsonl({"id": "b", "title": "U", "text": "y"}))
  stats = ReadStats()
  assert list(read_corpus(path, "jsonl", stats=stats)) == [Passage("a", "T", "x"), Passage("b", "U", "y")]
  assert (stats.read, stats.skipped, stats.files) == (2, 0, 1)


def test_directory_of_jsonl_files_in_sorted_order(tmp_path):
  _write(tmp_path / "d" / "part-01.jsonl", _jsonl({"id": "2", "title": "B", "text": "b"}))
  _write(tmp_path / "d" / "part-00.jsonl.gz", _jsonl({"id": "1", "title": "A", "text": "a"}))
  assert [p.id for p in read_corpus(tmp_path / "d", "jsonl")] == ["1", "2"]
  assert corpus_readers.detect_format(tmp_path / "d") == "jsonl"


def test_utf8_bom_is_ignored(tmp_path):
  record = _jsonl({"id": "a", "title": "T", "text": "x"}).encode()
  path = _write(tmp_path / "c.jsonl", b"\xef\xbb\xbf" + record)
  assert [p.id for p in read_corpus(path)] == ["a"]


def test_reading_is_lazy(tmp_path):
  # The bad record is on line 2: taking only the first passage must not reach it.
  path = _write(tmp_path / "c.jsonl", _jsonl({"id": "a", "title": "T", "text": "x"}, "{bad"))
  assert next(iter(read_corpus(path, "jsonl"))).id == "a"


# ---------------------------------------------------------------------------------------------
# Empty input.


@pytest.mark.parametrize("name,fmt", [("e.jsonl", "jsonl"), ("e.jsonl.gz", "wiki18"),
                                      ("e.json.bz2", "kilt"), ("e.jsonl", "auto")])
def test_empty_file_gives_no_passages(tmp_path, name, fmt):
  path = _write(tmp_path / name, "")
  stats = ReadStats()
  assert list(read_corpus(path, fmt, stats=stats)) == []
  assert stats.read == 0 and stats.skipped == 0


@pytest.mark.parametrize("fmt", ["jsonl", "wikiextractor_json", "wikiextractor_doc", "masksearch_dir"])
def test_empty_directory_gives_no_passages(tmp_path, fmt):
  (tmp_path / "d").mkdir()
  assert list(read_corpus(tmp_path / "d", fmt)) == []


def test_empty_doc_file_and_page_without_paragraphs(tmp_path):
  _write(tmp_path / "AA" / "wiki_00", "")
  _write(tmp_path / "AA" / "wiki_01", '<doc id="1" url="" title="T">\nT\n\n</doc>\n')
  assert list(read_corpus(tmp_path, "wikiextractor_doc")) == []


# ---------------------------------------------------------------------------------------------
# Malformed records name the file and the line.

GOOD = {"id": "ok", "title": "T", "text": "fine"}


@pytest.mark.parametrize("bad_line,reason", [
    ('{"id": "x", "title": "T", "text": "unterminated}', "bad JSON"),
    ('["a", "list"]', "expected a JSON object, got a array"),
    ('{"id": "x", "title": "T"}', "missing field 'text'"),
    ('{"id": "x", "title": "T", "text": 5}', "field 'text' must be a string, got a number"),
    ('{"id": "", "title": "T", "text": "t"}', "field 'id' is empty"),
    ('{"id": null, "title": "T", "text": "t"}', "field 'id' must be a string, got a null"),
])
def test_jsonl_malformed_record_names_file_and_line(tmp_path, bad_line, reason):
  path = _write(tmp_path / "c.jsonl", _jsonl(GOOD, GOOD, bad_line, GOOD))
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "jsonl"))
  assert str(info.value).startswith(_where(path, 3))
  assert reason in str(info.value)
  assert (info.value.path, info.value.line) == (str(path), 3)


def test_wiki18_missing_contents(tmp_path):
  path = _write(tmp_path / "w.jsonl.gz", _jsonl({"id": "1", "contents": '"A"\nx'}, {"id": "2", "text": "x"}))
  with pytest.raises(CorpusFormatError, match=r":2: missing field 'contents'") as info:
    list(read_corpus(path, "wiki18"))
  assert str(info.value).startswith(_where(path, 2))


@pytest.mark.parametrize("text,reason", [
    ("A page", "field 'text' must be an array of strings, got a string"),
    (["A\n", 3], "item 1 is a number"),
])
def test_kilt_wrong_text_type(tmp_path, text, reason):
  record = {"_id": "1", "wikipedia_id": "1", "wikipedia_title": "A", "text": text}
  path = _write(tmp_path / "k.json", _jsonl(record))
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "kilt"))
  assert str(info.value).startswith(_where(path, 1)) and reason in str(info.value)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.bz2"])
def test_undecodable_bytes_name_the_line(tmp_path, name):
  data = _jsonl(GOOD).encode() + b'{"id": "x", "title": "\xff\xfe", "text": "t"}\n' + _jsonl(GOOD).encode()
  path = _write(tmp_path / name, data)
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "jsonl"))
  assert str(info.value).startswith(_where(path, 2))
  assert "undecodable bytes" in str(info.value)


def test_undecodable_bytes_in_masksearch_page(tmp_path):
  path = _write(tmp_path / "d" / "Page", b"good line\nbad \xc3\x28 line\n")
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(tmp_path / "d", "masksearch_dir"))
  assert str(info.value).startswith(_where(path, 2))


def test_truncated_gzip_is_reported(tmp_path):
  path = tmp_path / "c.jsonl.gz"
  path.write_bytes(gzip.compress(_jsonl(*[GOOD] * 50).encode())[:-12])
  with pytest.raises(CorpusFormatError, match="corrupt or truncated") as info:
    list(read_corpus(path, "jsonl"))
  assert info.value.path == str(path)


def test_unclosed_doc_names_its_opening_line(tmp_path):
  path = _write(tmp_path / "AA" / "wiki_00", """\
<doc id="1" url="" title="A">
A

Para.
</doc>
<doc id="2" url="" title="B">
B

Never closed.
""")
  with pytest.raises(CorpusFormatError, match="never closed") as info:
    list(read_corpus(path, "wikiextractor_doc"))
  assert str(info.value).startswith(_where(path, 6))


def test_doc_opened_inside_another_doc(tmp_path):
  path = _write(tmp_path / "wiki_00",
                '<doc id="1" url="" title="A">\nA\nx\n<doc id="2" url="" title="B">\ny\n</doc>\n')
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "wikiextractor_doc"))
  assert str(info.value).startswith(_where(path, 1))
  stats = ReadStats()
  got = list(read_corpus(path, "wikiextractor_doc", skip_bad=True, stats=stats))
  assert got == [Passage("2-0", "B", "y")]
  assert stats.skipped == 1


@pytest.mark.parametrize("header,reason", [
    ('<doc url="" title="A">', "no id attribute"),
    ('<doc id="1" url="">', "no title attribute"),
    ("<document>", "malformed <doc> line"),
])
def test_doc_header_without_id_or_title(tmp_path, header, reason):
  path = _write(tmp_path / "wiki_00",
                f'<doc id="0" url="" title="Z">\nZ\nz\n</doc>\n{header}\nA\nx\n</doc>\n')
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "wikiextractor_doc"))
  assert str(info.value).startswith(_where(path, 5)) and reason in str(info.value)


def test_text_outside_doc_block(tmp_path):
  path = _write(tmp_path / "wiki_00", 'stray\nlines\n<doc id="1" url="" title="A">\nA\nx\n</doc>\n')
  with pytest.raises(CorpusFormatError, match="outside a <doc> block") as info:
    list(read_corpus(path, "wikiextractor_doc"))
  assert str(info.value).startswith(_where(path, 1))


# ---------------------------------------------------------------------------------------------
# skip_bad.


def test_skip_bad_skips_exactly_the_bad_records(tmp_path, caplog):
  path = _write(tmp_path / "c.jsonl", _jsonl(
      {"id": "1", "title": "A", "text": "a"},
      "{not json",
      {"id": "2", "title": "B", "text": "b"},
      {"id": "3", "title": "C"},
      {"id": "4", "title": "D", "text": "d"},
      {"id": "5", "title": "E"},
  ))
  with open(path, "ab") as f:
    f.write(b'{"id": "6", "title": "\xff", "text": "t"}\n')
  stats = ReadStats()
  with caplog.at_level(logging.WARNING):
    got = list(read_corpus(path, "jsonl", skip_bad=True, stats=stats))
  assert [p.id for p in got] == ["1", "2", "4"]
  assert stats.skipped == 4
  assert stats.read == 3
  assert stats.first_error is not None and stats.first_error.startswith(_where(path, 2))
  assert stats.skipped_by_reason == {"bad_json": 1, "missing_field": 2, "undecodable": 1}
  assert f"skipped 4 malformed records in {path}" in caplog.text


def test_skip_bad_counts_across_files_and_warns_per_file(tmp_path, caplog):
  _write(tmp_path / "AA" / "wiki_00", '<doc id="1" url="" title="A">\nA\nx\n')  # unclosed
  _write(tmp_path / "AA" / "wiki_01",
         '<doc id="2" url="" title="B">\nB\ny\n</doc>\n<doc title="C">\nz\n</doc>\n')
  stats = ReadStats()
  with caplog.at_level(logging.WARNING):
    got = list(read_corpus(tmp_path, skip_bad=True, stats=stats))
  assert got == [Passage("2-0", "B", "y")]
  assert stats.skipped == 2 and stats.files == 2
  assert caplog.text.count("skipped 1 malformed records in") == 2


def test_skip_bad_undecodable_line_drops_its_whole_doc(tmp_path):
  path = _write(tmp_path / "wiki_00.bz2",
                b'<doc id="1" url="" title="A">\nA\nok\nbad \xff\nmore\n</doc>\n'
                b'<doc id="2" url="" title="B">\nB\ny\n</doc>\n')
  with pytest.raises(CorpusFormatError) as info:
    list(read_corpus(path, "wikiextractor_doc"))
  assert str(info.value).startswith(_where(path, 4))
  stats = ReadStats()
  assert [p.id for p in read_corpus(path, "wikiextractor_doc", skip_bad=True, stats=stats)] == ["2-0"]
  assert stats.skipped == 1


def test_without_skip_bad_stats_stay_zero_until_error(tmp_path):
  path = _write(tmp_path / "c.jsonl", _jsonl(GOOD, "[]"))
  stats = ReadStats()
  with pytest.raises(CorpusFormatError):
    for _ in read_corpus(path, "jsonl", stats=stats):
      pass
  assert stats.read == 1 and stats.skipped == 0


# ---------------------------------------------------------------------------------------------
# Detection.


def test_detect_format_of_each_sample(tmp_path):
  assert corpus_readers.detect_format(_write(tmp_path / "w.jsonl.gz", WIKI18)) == "wiki18"
  assert corpus_readers.detect_format(_write(tmp_path / "k.json", KILT)) == "kilt"
  assert corpus_readers.detect_format(_write(tmp_path / "j.jsonl", _jsonl(GOOD))) == "jsonl"
  _write(tmp_path / "x" / "AA" / "wiki_00", EXTRACTOR_JSON)
  _write(tmp_path / "y" / "AA" / "wiki_00.bz2", EXTRACTOR_DOC)
  _write(tmp_path / "m" / "Some page", "para\n")
  assert corpus_readers.detect_format(tmp_path / "x") == "wikiextractor_json"
  assert corpus_readers.detect_format(tmp_path / "y") == "wikiextractor_doc"
  assert corpus_readers.detect_format(tmp_path / "x" / "AA") == "wikiextractor_json"
  assert corpus_readers.detect_format(tmp_path / "x" / "AA" / "wiki_00") == "wikiextractor_json"
  assert corpus_readers.detect_format(tmp_path / "m") == "masksearch_dir"
  assert corpus_readers.detect_format("tfds:wikipedia/20230601.en") == "tfds"


def test_detect_wikiextractor_skips_empty_first_file(tmp_path):
  _write(tmp_path / "AA" / "wiki_00", "\n\n")
  _write(tmp_path / "AA" / "wiki_01", EXTRACTOR_DOC)
  assert corpus_readers.detect_format(tmp_path) == "wikiextractor_doc"
  assert len(list(read_corpus(tmp_path))) == 3


@pytest.mark.parametrize("content,why", [
    ('{"question": "q", "answer": "a"}\n', "has fields"),
    ("[1, 2, 3]\n", "not an object"),
    ("hello world\n", "not JSON"),
])
def test_auto_detect_failure_is_clear(tmp_path, content, why):
  path = _write(tmp_path / "mystery.jsonl", content)
  with pytest.raises(CorpusFormatError) as info:
    read_corpus(path)  # Detection is eager: no iteration needed.
  message = str(info.value)
  assert message.startswith(f"{path}: cannot detect the corpus format")
  assert why in message
  for name in corpus_readers.FORMATS:
    assert name in message


def test_auto_detect_empty_directory_fails(tmp_path):
  with pytest.raises(CorpusFormatError, match="empty directory"):
    read_corpus(tmp_path)


def test_missing_path_and_unknown_format(tmp_path):
  with pytest.raises(FileNotFoundError):
    read_corpus(tmp_path / "nope.jsonl")
  with pytest.raises(FileNotFoundError):
    read_corpus(tmp_path / "nope.jsonl", "wiki18")
  path = _write(tmp_path / "c.jsonl", _jsonl(GOOD))
  with pytest.raises(ValueError, match="unknown corpus format 'parquet'"):
    read_corpus(path, "parquet")
  with pytest.raises(ValueError, match="max_words"):
    read_corpus(path, max_words=0)


# ---------------------------------------------------------------------------------------------
# max_words.


def test_max_words_chunks_long_passages(tmp_path):
  long_text = " ".join(f"w{i}" for i in range(250))
  path = _write(tmp_path / "c.jsonl", _jsonl({"id": "long", "title": "L", "text": long_text},
                                            {"id": "short", "title": "S", "text": "two  words"}))
  stats = ReadStats()
  got = list(read_corpus(path, max_words=100, stats=stats))
  assert [p.id for p in got] == ["long-c0", "long-c1", "long-c2", "short"]
  assert [len(p.text.split()) for p in got] == [100, 100, 50, 2]
  assert got[1].text.split()[0] == "w100" and got[2].text.split()[-1] == "w249"
  assert {p.title for p in got[:3]} == {"L"}
  assert got[3] == Passage("short", "S", "two  words")  # Within the limit: untouched.
  assert stats.read == 4


def test_max_words_exact_multiple(tmp_path):
  path = _write(tmp_path / "c.jsonl", _jsonl({"id": "x", "title": "T", "text": "a b c d"}))
  assert [p.text for p in read_corpus(path, max_words=2)] == ["a b", "c d"]
  assert [p.text for p in read_corpus(path, max_words=4)] == ["a b c d"]


# ---------------------------------------------------------------------------------------------
# masksearch file names.


@pytest.mark.parametrize("title", ["AC/DC", "100% pure", ".hack", "..", "a%2Fb", "", "Ünïcödé/日本"])
def test_masksearch_filename_round_trip(title):
  name = corpus_readers.masksearch_filename(title)
  assert "/" not in name and name not in (".", "..") and not name.startswith(".") and name
  assert corpus_readers.masksearch_title(name) == title


def test_masksearch_filename_too_long_is_cut():
  name = corpus_readers.masksearch_filename("é" * 300)
  assert len(name.encode("utf-8")) <= 255
  assert name != corpus_readers.masksearch_filename("é" * 299)


# ---------------------------------------------------------------------------------------------
# TFDS (mocked: the real dataset cannot be prepared here).


def test_tfds_wikipedia_with_mocked_builder(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  titles = ["Anarchism", "Autism", "Empty"]
  texts = ["Anarchism is a philosophy.\n\nHistory section.\nSecond line.\n\n\n  Later section.",
           "Autism is a disorder.", "   "]

  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensor_slices({"title": titles, "text": texts})

  load_calls = []
  real_load = tfds.load

  def spy_load(*args, **kwargs):
    load_calls.append((args, kwargs))
    return real_load(*args, **kwargs)

  monkeypatch.setattr(tfds, "load", spy_load)

  data_dir = str(tmp_path / "tfds_data")
  stats = ReadStats()
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    got = list(read_corpus(f"tfds:wikipedia/20230601.en@{data_dir}", stats=stats))
  assert load_calls == [(("wikipedia/20230601.en",),
                         {"split": "train", "download": False, "data_dir": data_dir})]
  assert got == [
      Passage("Anarchism-0", "Anarchism", "Anarchism is a philosophy."),
      Passage("Anarchism-1", "Anarchism", "History section.\nSecond line."),
      Passage("Anarchism-2", "Anarchism", "Later section."),
      Passage("Autism-0", "Autism", "Autism is a disorder."),
  ]
  assert stats.read == 4 and stats.files == 1
  assert not os.path.exists(data_dir)  # Nothing was downloaded or prepared.

  # The default mock policy makes random examples: check the count and the structure.
  with tfds.testing.mock_data(num_examples=3):
    got = list(read_corpus("tfds:wikipedia/20230601.en", "tfds", data_dir=data_dir))
  assert 1 <= len({p.title for p in got}) <= 3
  for p in got:
    assert p.id.startswith(f"{p.title}-") and p.text == p.text.strip() and p.text


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  data_dir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError) as info:
    read_corpus(f"tfds:wikipedia/20230601.en@{data_dir}")
  message = str(info.value)
  assert "not prepared" in message
  assert f"tfds build wikipedia/20230601.en --data_dir={data_dir}" in message
  assert not os.path.exists(data_dir)
