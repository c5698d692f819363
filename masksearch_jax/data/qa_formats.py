"""Readers and writers for question-answering benchmark formats, all reading to `QAExample`.

Readers (the `format` argument of `read_qa`):

  hotpotqa   `hotpot_dev_distractor_v1.json`: a JSON list of `{_id, question, answer, type, level,
             supporting_facts, context}`. HotpotQA has no aliases: answers = [answer].
  musique    `musique_ans_v1.0_{split}.jsonl`: `{id, question, answer, answer_aliases, answerable,
             paragraphs, question_decomposition}`; answers = [answer] + answer_aliases.
  2wiki      2WikiMultiHopQA `train.json`/`dev.json`/`test.json` (JSON lists), with aliases from an
             `id_aliases.json` next to it (JSON lines `{Q_id, aliases, demonyms}`), if there is one.
  bamboogle  A parquet file with columns `Question`, `Answer`; ids are the row indices.
  fanoutqa   `fanout-final-dev.json`: a JSON list of `{id, question, decomposition, answer,
             categories}`; a structured answer is flattened to text (`flatten_answer`).
  freshqa    FreshQA's sheet exported as CSV: preamble rows, the header, then one question a row;
             answers are the non-empty `answer_0` .. `answer_9` cells.
  flashrag   FlashRAG's `<dataset>/{split}.jsonl`: `{id, question, golden_answers, metadata?}`.
  searchr1   Search-R1's parquet: the FlashRAG columns plus `data_source`, `prompt`, `ability`,
             `reward_model: {style, ground_truth: {target}}`, `extra_info: {split, index}`.

The JSON readers accept either layout, a JSON list or one record a line, whatever the format
usually uses; JSON lines are streamed, a JSON list is parsed whole (the standard library has
no streaming JSON parser). Files ending in `.gz` or `.bz2` are decompressed on the fly.

A malformed record (bad JSON, a missing field, a wrong type, bytes that are not UTF-8, an empty
question or answer) raises `CorpusFormatError` naming the file and where in it: the line for
JSON lines and CSV (the line the CSV row starts on), and `record N: ...` (0-based index, no
line) for JSON lists, `row N: ...` for parquet. With `skip_bad=True` such records are skipped
and counted in `QAReadStats`; a file that cannot be parsed at all (a JSON list with a syntax
error, a file that is not parquet, a missing column) always raises.

Writers put the embedded world's `Question`s in the formats the world exports (`flashrag`,
`hotpotqa`, `musique`, `2wiki`, see `write_world_questions`), and `write_flashrag` and
`write_searchr1_parquet` also take `QAExample`s, to convert any benchmark. Every writer builds
its output under a hidden temporary sibling and renames it into place (`os.replace`), and
refuses to replace an existing target unless `overwrite=True`.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import dataclasses
import gzip
import json
import os
import random
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from masksearch_jax.agent import protocol
from masksearch_jax.data.atomic_files import atomic_output, atomic_text
from masksearch_jax.data.bad_records import BadRecord, ReadStats, SkipOrRaise
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.world import World
from masksearch_jax.data.world_types import Question, WorldPassage

FORMATS = ("hotpotqa", "musique", "2wiki", "bamboogle", "fanoutqa", "freshqa", "flashrag", "searchr1")
WORLD_FORMATS = ("flashrag", "hotpotqa", "musique", "2wiki")
SPLITS = ("train", "dev", "test")

TWOWIKI_ALIASES = "id_aliases.json"
FRESHQA_ANSWER_COLUMNS = tuple(f"answer_{i}" for i in range(10))
# Search-R1's instruction (its `make_prefix`, template "base"), so the written parquet works with
# Search-R1's training and evaluation scripts as they are.
# Search-R1's "base" instruction; the agent protocol owns it.
SEARCH_R1_PROMPT = protocol.QA_PROMPT

# World question type -> HotpotQA type.
_HOTPOT_TYPES = {"compositional": "bridge", "inference": "bridge", "comparison": "comparison",
                 "bridge_comparison": "comparison"}
_COMPRESSED = (".gz", ".bz2")
_UTF8_BOM = b"\xef\xbb\xbf"
_FRESHQA_HEADER_SEARCH_ROWS = 10
_PARQUET_BATCH_ROWS = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class QAExample:
  """One benchmark question with its accepted answers, whatever file it came from.

  Attributes:
    id: The benchmark's id of the question (as a string).
    question: The question text.
    answers: The gold answer first, then its aliases; never empty.
    source: The benchmark it came from ('hotpotqa', 'musique', ...).
    metadata: What else the benchmark says that evaluation may use (question type, level, hops,
      supporting facts, decomposition, ...); JSON-serialisable.
  """

  id: str
  question: str
  answers: list[str]
  source: str
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.answers:
      raise ValueError(f"QAExample {self.id!r} has no answers")

  @property
  def answer(self) -> str:
    """The gold answer."""
    return self.answers[0]

  @property
  def aliases(self) -> list[str]:
    """The other accepted answers."""
    return self.answers[1:]

  def to_json(self) -> dict:
    return {"id": self.id, "question": self.question, "answers": list(self.answers),
            "source": self.source, "metadata": self.metadata}

  @classmethod
  def from_json(cls, record: dict) -> "QAExample":
    return cls(record["id"], record["question"], list(record["answers"]), record["source"],
               dict(record.get("metadata") or {}))


def question_to_example(question: Question, source: str = "world") -> QAExample:
  """The `QAExample` of one of the world's questions (answers = answer + aliases)."""
  return QAExample(question.id, question.question, _answers(question), source, _world_metadata(question))


# What a QA reader has read and skipped: the `ReadStats` every reader fills, under its old name.
QAReadStats = ReadStats


# ---------------------------------------------------------------------------------------------
# Malformed records.


@dataclasses.dataclass(frozen=True)
class _Where:
  """The place of a record: a line number, or a label such as 'record 17' (without a line)."""

  line: int | None = None
  label: str | None = None


def _type_name(types: type | tuple[type, ...]) -> str:
  names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object",
           float: "a number"}
  types = types if isinstance(types, tuple) else (types,)
  return " or ".join(names.get(t, t.__name__) for t in types)


def _json_type(value: Any) -> str:
  return {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "object",
          type(None): "null"}.get(type(value), type(value).__name__)


def _get(record: dict, name: str, types: type | tuple[type, ...], *, optional: bool = False,
         default: Any = None) -> Any:
  """`record[name]` checked against `types`; a missing or null optional field gives `default`."""
  if name not in record or (optional and record[name] is None):
    if optional:
      return default
    raise BadRecord("missing_field", f"missing field {name!r}")
  value = record[name]
  types_tuple = types if isinstance(types, tuple) else (types,)
  # bool is an int in Python, but never a valid id, count or index.
  if not isinstance(value, types_tuple) or (isinstance(value, bool) and bool not in types_tuple):
    raise BadRecord("wrong_type", f"field {name!r} should be {_type_name(types)}, got {_json_type(value)}")
  return value


def _text(record: dict, name: str) -> str:
  value = _get(record, name, str)
  if not value.strip():
    raise BadRecord("empty_field", f"field {name!r} is empty")
  return value


def _id(record: dict, name: str) -> str:
  value = _get(record, name, (str, int))
  if isinstance(value, str) and not value.strip():
    raise BadRecord("empty_field", f"field {name!r} is empty")
  return str(value)


def _str_list(record: dict, name: str, *, optional: bool = False) -> list[str]:
  return _check_strings(name, _get(record, name, list, optional=optional, default=[]))


def _check_strings(name: str, values: list) -> list[str]:
  for i, value in enumerate(values):
    if not isinstance(value, str):
      raise BadRecord("wrong_type", f"field {name!r}[{i}] should be a string, got {_json_type(value)}")
  return values


def _dict_list(record: dict, name: str, *, optional: bool = False) -> list[dict]:
  values = _get(record, name, list, optional=optional, default=[])
  for i, value in enumerate(values):
    if not isinstance(value, dict):
      raise BadRecord("wrong_type", f"field {name!r}[{i}] should be an object, got {_json_type(value)}")
  return values


def _title_index_pairs(record: dict, name: str) -> list[list]:
  """A list of `[title, sentence index]` pairs (HotpotQA and 2Wiki `supporting_facts`)."""
  pairs = _get(record, name, list, optional=True, default=[])
  for i, pair in enumerate(pairs):
    if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
        or not isinstance(pair[1], int) or isinstance(pair[1], bool)):
      raise BadRecord("wrong_type", f"field {name!r}[{i}] should be [title, sentence index], got {pair!r:.80}")
  return pairs


def _unique_answers(answers: Iterable[str]) -> list[str]:
  """Non-empty answers in order, without repeats."""
  return list(dict.fromkeys(a for a in answers if a.strip()))


def _has_lone_surrogates(value: Any) -> bool:
  """True when a string inside `value` holds characters that cannot be written as UTF-8."""
  if isinstance(value, str):
    try:
      value.encode("utf-8")
    except UnicodeEncodeError:
      return True
    return False
  if isinstance(value, list):
    return any(_has_lone_surrogates(v) for v in value)
  if isinstance(value, dict):
    return any(_has_lone_surrogates(k) or _has_lone_surrogates(v) for k, v in value.items())
  return False


_UNDECODABLE = BadRecord("undecodable", "text is not valid UTF-8 (undecodable bytes)")


# ---------------------------------------------------------------------------------------------
# Reading JSON records: one per line, or a JSON list.


def _open_binary(path: Path) -> IO[bytes]:
  if path.name.endswith(".gz"):
    return gzip.open(path, "rb")
  if path.name.endswith(".bz2"):
    return bz2.open(path, "rb")
  return open(path, "rb")


def _bare_name(path: Path) -> str:
  """The file name without a compression suffix."""
  name = path.name
  for suffix in _COMPRESSED:
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return name


def _first_char(path: Path) -> str:
  """The first non-whitespace character of a text file ('' if there is none)."""
  with _open_binary(path) as f:
    head = f.read(4096)
    while head:
      stripped = head.removeprefix(_UTF8_BOM).lstrip()
      if stripped:
        return chr(stripped[0])
      head = f.read(4096)
  return ""


def _iter_json_records(path: Path, policy: SkipOrRaise) -> Iterator[tuple[_Where, dict]]:
  """The JSON objects of a file, each with its place; a malformed line goes to `policy`."""
  if _first_char(path) == "[":
    yield from _iter_json_list(path, policy)
  else:
    yield from _iter_json_lines(path, policy)


def _iter_json_lines(path: Path, policy: SkipOrRaise) -> Iterator[tuple[_Where, dict]]:
  with _open_binary(path) as f:
    for line_number, raw in enumerate(f, 1):
      if line_number == 1:
        raw = raw.removeprefix(_UTF8_BOM)
      if not raw.strip():
        continue
      try:
        record = _parse_json_line(raw)
      except BadRecord as err:
        policy.bad(path, line_number, err)
        continue
      yield _Where(line=line_number), record


def _parse_json_line(raw: bytes) -> dict:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadRecord("undecodable", f"bytes that are not UTF-8 at byte {e.start} of the line") from e
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise BadRecord("bad_json", f"bad JSON ({e.msg} at column {e.colno})") from e
  if not isinstance(record, dict):
    raise BadRecord("wrong_type", f"expected a JSON object, got {_json_type(record)}")
  return record


def _iter_json_list(path: Path, policy: SkipOrRaise) -> Iterator[tuple[_Where, dict]]:
  with _open_binary(path) as f:
    data = f.read().removeprefix(_UTF8_BOM)
  try:
    text = data.decode("utf-8")
    checked = True
  except UnicodeDecodeError:
    # Decode anyway, keeping bad bytes as lone surrogates, so that the records holding them can
    # be named (and skipped) one by one.
    text = data.decode("utf-8", errors="surrogateescape")
    checked = False
  del data
  try:
    records = json.loads(text)
  except json.JSONDecodeError as e:
    raise CorpusFormatError(str(path), e.lineno, f"bad JSON ({e.msg} at column {e.colno})") from e
  del text
  for index, record in enumerate(records):
    where = _Where(label=f"record {index}")
    if not isinstance(record, dict):
      err = BadRecord("wrong_type", f"expected a JSON object, got {_json_type(record)}")
      policy.bad(path, where.line, err, label=where.label)
      continue
    if not checked and _has_lone_surrogates(record):
      policy.bad(path, where.line, _UNDECODABLE, label=where.label)
      continue
    yield where, record


def _first_json_record(path: Path) -> dict | None:
  """The first record of a JSON list or JSON lines file, reading only as far as needed."""
  if _first_char(path) != "[":
    with _open_binary(path) as f:
      for line_number, raw in enumerate(f, 1):
        if line_number == 1:
          raw = raw.removeprefix(_UTF8_BOM)
        if raw.strip():
          try:
            return _parse_json_line(raw)
          except BadRecord as err:
            raise CorpusFormatError(str(path), line_number, err.reason) from err
    return None
  decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
  text, chunk, done = "", 1 << 16, False
  with _open_binary(path) as f:
    while True:
      data = f.read(chunk)
      done = not data
      text += decoder.decode(data, final=done)
      start = text.index("[") + 1
      while start < len(text) and text[start].isspace():
        start += 1
      if start < len(text) and text[start] == "]":
        return None
      try:
        record, _ = json.JSONDecoder().raw_decode(text, start)
        break
      except json.JSONDecodeError as e:
        if done:
          raise CorpusFormatError(str(path), e.lineno, f"bad JSON ({e.msg} at column {e.colno})") from e
      chunk *= 2
  if not isinstance(record, dict):
    raise CorpusFormatError(str(path), None, f"record 0: expected a JSON object, got {_json_type(record)}")
  return record


def _examples(path: Path, records: Iterable[tuple[_Where, Any]], convert: Callable[[Any], QAExample],
              policy: SkipOrRaise) -> Iterator[QAExample]:
  """The examples `convert` makes of the records of one file; a malformed one goes to `policy`."""
  for where, record in records:
    try:
      example = convert(record)
    except BadRecord as err:
      policy.bad(path, where.line, err, label=where.label)
      continue
    policy.stats.read += 1
    yield example
  policy.end_file(path)


def _read_json_format(path: Path, convert: Callable[[dict], QAExample], skip_bad: bool,
                      stats: QAReadStats | None) -> Iterator[QAExample]:
  policy = SkipOrRaise(skip_bad, QAReadStats() if stats is None else stats)
  return _examples(path, _iter_json_records(path, policy), convert, policy)


def _checked_path(path: str | os.PathLike) -> Path:
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"QA file not found: {path}")
  if path.is_dir():
    raise IsADirectoryError(f"{path} is a directory; give one file of the benchmark")
  return path


# ---------------------------------------------------------------------------------------------
# One converter per JSON format.


def _hotpotqa_example(record: dict) -> QAExample:
  metadata = {"type": _get(record, "type", str, optional=True),
              "level": _get(record, "level", str, optional=True),
              "supporting_facts": _title_index_pairs(record, "supporting_facts")}
  return QAExample(_id(record, "_id"), _text(record, "question"), [_text(record, "answer")], "hotpotqa",
                   metadata)


def _musique_example(record: dict) -> QAExample:
  answers = _unique_answers([_text(record, "answer")] + _str_list(record, "answer_aliases", optional=True))
  decomposition = []
  for i, step in enumerate(_dict_list(record, "question_decomposition", optional=True)):
    try:
      decomposition.append({"id": _get(step, "id", (int, str), optional=True),
                            "question": _get(step, "question", str),
                            "answer": _get(step, "answer", str),
                            "paragraph_support_idx": _get(step, "paragraph_support_idx", int, optional=True)})
    except BadRecord as err:
      raise BadRecord(err.kind, f"question_decomposition[{i}]: {err.reason}") from err
  supporting_idx, supporting_titles = [], []
  for i, paragraph in enumerate(_dict_list(record, "paragraphs", optional=True)):
    try:
      if _get(paragraph, "is_supporting", bool, optional=True, default=False):
        supporting_idx.append(_get(paragraph, "idx", int, optional=True, default=i))
        supporting_titles.append(_get(paragraph, "title", str))
    except BadRecord as err:
      raise BadRecord(err.kind, f"paragraphs[{i}]: {err.reason}") from err
  metadata = {"answerable": _get(record, "answerable", bool, optional=True, default=True),
              "hops": len(decomposition) or None,
              "decomposition": decomposition,
              "supporting_idx": supporting_idx,
              "supporting_titles": supporting_titles}
  return QAExample(_id(record, "id"), _text(record, "question"), answers, "musique", metadata)


def _twowiki_converter(aliases: dict[str, list[str]]) -> Callable[[dict], QAExample]:
  def convert(record: dict) -> QAExample:
    qid = _id(record, "_id")
    answer = _text(record, "answer")
    answer_id = _get(record, "answer_id", str, optional=True)
    extra = (aliases.get(answer_id, []) if answer_id else []) + aliases.get(qid, [])
    entity_ids = _get(record, "entity_ids", (str, list), optional=True, default="")
    if isinstance(entity_ids, str):
      entity_ids = [e for e in entity_ids.split("_") if e]
    evidences = _get(record, "evidences", list, optional=True, default=[])
    for i, triple in enumerate(evidences):
      if not isinstance(triple, list) or len(triple) != 3 or not all(isinstance(x, str) for x in triple):
        raise BadRecord("wrong_type",
                        f"field 'evidences'[{i}] should be [subject, relation, object], got {triple!r:.80}")
    metadata = {"type": _get(record, "type", str, optional=True),
                "hops": len(evidences) or None,
                "evidences": evidences,
                "supporting_facts": _title_index_pairs(record, "supporting_facts"),
                "entity_ids": entity_ids,
                "answer_id": answer_id}
    return QAExample(qid, _text(record, "question"), _unique_answers([answer] + extra), "2wiki", metadata)
  return convert


def flatten_answer(answer: Any) -> str:
  """FanoutQA's structured answer as text, the way FanoutQA's own scorer writes it.

  Lists are joined by newlines, a dict becomes one `key - value` line per entry (values
  flattened in turn), a boolean becomes "yes" or "no", None becomes "", and any other value
  `str(value)`.
  """
  if isinstance(answer, list):
    return "\n".join(flatten_answer(a) for a in answer)
  if isinstance(answer, dict):
    return "\n".join(f"{k} - {flatten_answer(v)}" for k, v in answer.items())
  if isinstance(answer, bool):
    return "yes" if answer else "no"
  if answer is None:
    return ""
  return str(answer)


def _fanoutqa_example(record: dict) -> QAExample:
  raw = _get(record, "answer", (str, int, float, bool, list, dict))
  answer = flatten_answer(raw)
  if not answer.strip():
    raise BadRecord("empty_field", "field 'answer' is empty")
  metadata = {"decomposition": _get(record, "decomposition", list, optional=True, default=[]),
              "categories": _str_list(record, "categories", optional=True),
              "answer_raw": raw}
  return QAExample(_id(record, "id"), _text(record, "question"), [answer], "fanoutqa", metadata)


def _flashrag_converter(source: str) -> Callable[[dict], QAExample]:
  def convert(record: dict) -> QAExample:
    answers = _unique_answers(_str_list(record, "golden_answers"))
    if not answers:
      raise BadRecord("empty_field", "field 'golden_answers' has no non-empty answer")
    metadata = _get(record, "metadata", dict, optional=True, default={})
    return QAExample(_id(record, "id"), _text(record, "question"), answers, source, dict(metadata))
  return convert


# ---------------------------------------------------------------------------------------------
# Public readers.


def read_hotpotqa(path: str | os.PathLike, *, skip_bad: bool = False,
                  stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads HotpotQA (`hotpot_{train,dev}_*.json`).

  answers = [answer] (HotpotQA has no aliases); metadata: type, level, supporting_facts. The
  `context` paragraphs are not kept.
  """
  return _read_json_format(_checked_path(path), _hotpotqa_example, skip_bad, stats)


def read_musique(path: str | os.PathLike, *, skip_bad: bool = False,
                 stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads MuSiQue (`musique_{ans,full}_v1.0_{split}.jsonl`).

  answers = [answer] + answer_aliases; metadata: answerable, hops (steps of the decomposition),
  decomposition (`{id, question, answer, paragraph_support_idx}` each), and the idx and title of
  the supporting paragraphs.
  """
  return _read_json_format(_checked_path(path), _musique_example, skip_bad, stats)


def read_2wiki(path: str | os.PathLike, *, aliases_path: str | os.PathLike | None = None,
               skip_bad: bool = False, stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads 2WikiMultiHopQA (`train.json`, `dev.json`, `test.json`).

  Aliases come from `aliases_path`, else from an `id_aliases.json` in the same directory if
  there is one. That file maps Wikidata ids to `aliases` and `demonyms`; as the official
  evaluation script does, a record takes the aliases and demonyms of its `answer_id` (the
  answer's entity). Records without `answer_id` (some releases) get no entity aliases. Aliases
  keyed by the record's own `_id` are added too: that is how `write_2wiki` keeps the aliases of
  answers that are not entities (dates, numbers). answers = [answer] + those, without repeats.

  metadata: type, hops (number of evidence triples), evidences, supporting_facts, entity_ids
  (the `Q1_Q2` string split into a list), answer_id. The alias file is read when this is
  called; the questions while iterating.
  """
  path = _checked_path(path)
  stats = QAReadStats() if stats is None else stats
  if aliases_path is None:
    sibling = path.parent / TWOWIKI_ALIASES
    aliases_file = sibling if sibling.is_file() and sibling != path else None
  else:
    aliases_file = _checked_path(aliases_path)
  aliases = read_2wiki_aliases(aliases_file, skip_bad=skip_bad, stats=stats) if aliases_file else {}
  return _read_json_format(path, _twowiki_converter(aliases), skip_bad, stats)


def read_2wiki_aliases(path: str | os.PathLike, *, skip_bad: bool = False,
                       stats: QAReadStats | None = None) -> dict[str, list[str]]:
  """Reads 2WikiMultiHopQA's `id_aliases.json` (JSON lines `{Q_id, aliases, demonyms}`).

  Returns:
    Q_id -> aliases followed by demonyms (an id listed twice gets both lists).
  """
  path = _checked_path(path)
  stats = QAReadStats() if stats is None else stats
  policy = SkipOrRaise(skip_bad, stats)
  aliases: dict[str, list[str]] = {}
  for where, record in _iter_json_records(path, policy):
    try:
      qid = _id(record, "Q_id")
      names = _str_list(record, "aliases", optional=True) + _str_list(record, "demonyms", optional=True)
    except BadRecord as err:
      policy.bad(path, where.line, err, label=where.label)
      continue
    aliases[qid] = _unique_answers(aliases.get(qid, []) + names)
  policy.end_file(path)
  return aliases


def read_fanoutqa(path: str | os.PathLike, *, skip_bad: bool = False,
                  stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads FanoutQA (`fanout-final-dev.json`).

  The answer, which may be a dict, list, string, number or boolean, is flattened to text by
  `flatten_answer`; the original is kept as metadata["answer_raw"] (FanoutQA's own metrics
  score the parts separately). metadata also has decomposition and categories. The test file,
  which has no answers, is rejected record by record.
  """
  return _read_json_format(_checked_path(path), _fanoutqa_example, skip_bad, stats)


def read_flashrag(path: str | os.PathLike, *, source: str | None = None, skip_bad: bool = False,
                  stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads FlashRAG's unified format (`<dataset>/{split}.jsonl`).

  answers = golden_answers; metadata = the record's metadata (or {}). `source` defaults to the
  dataset directory's name when the file is named after a split, as FlashRAG lays them out
  (`hotpotqa/dev.jsonl` -> 'hotpotqa'), else 'flashrag'.
  """
  path = _checked_path(path)
  if source is None:
    split = _bare_name(path).removesuffix(".jsonl").removesuffix(".json")
    named_after_split = split in SPLITS or split in ("val", "validation")
    source = path.resolve().parent.name if named_after_split and path.resolve().parent.name else "flashrag"
  return _read_json_format(path, _flashrag_converter(source), skip_bad, stats)


def read_freshqa(path: str | os.PathLike, *, skip_bad: bool = False,
                 stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads FreshQA's sheet exported as CSV.

  The header is the first row, among the first ten, with a `question` and an `answer_0` cell
  (the sheet has two preamble rows above it). Empty rows are passed over. answers = the
  non-empty `answer_0` .. `answer_9` cells in order; metadata: split, false_premise (a boolean
  when the cell says TRUE or FALSE), num_hops, fact_type, effective_year, next_review, source,
  note (those the header has).
  """
  return _read_freshqa(_checked_path(path), skip_bad, QAReadStats() if stats is None else stats)


def _decoded_lines(f: IO[bytes]) -> Iterator[str]:
  for number, raw in enumerate(f):
    if number == 0:
      raw = raw.removeprefix(_UTF8_BOM)
    yield raw.decode("utf-8", errors="surrogateescape")


def _read_freshqa(path: Path, skip_bad: bool, stats: QAReadStats) -> Iterator[QAExample]:
  policy = SkipOrRaise(skip_bad, stats)
  return _examples(path, _freshqa_rows(path, policy), _freshqa_example, policy)


def _freshqa_rows(path: Path, policy: SkipOrRaise) -> Iterator[tuple[_Where, dict[str, str]]]:
  """The non-empty rows below the header, as header cell -> row cell; a bad row goes to `policy`."""
  with _open_binary(path) as f:
    reader = csv.reader(_decoded_lines(f))
    header = None
    try:
      for _ in range(_FRESHQA_HEADER_SEARCH_ROWS):
        row = next(reader)
        cells = [c.strip() for c in row]
        if "question" in cells and "answer_0" in cells:
          header = cells
          break
    except StopIteration:
      pass
    except csv.Error as e:
      raise CorpusFormatError(str(path), reader.line_num, f"bad CSV ({e})") from e
    if header is None:
      raise CorpusFormatError(str(path), None, "no header row with 'question' and 'answer_0' cells in the first "
                              f"{_FRESHQA_HEADER_SEARCH_ROWS} rows; is this FreshQA's CSV?")
    while True:
      line = reader.line_num + 1
      try:
        row = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        policy.bad(path, line, BadRecord("bad_csv", f"bad CSV ({e})"))
        continue
      if not any(cell.strip() for cell in row):
        continue
      yield _Where(line=line), dict(zip(header, row))


def _freshqa_example(cells: dict[str, str]) -> QAExample:
  if _has_lone_surrogates(list(cells.values())):
    raise _UNDECODABLE
  qid = cells.get("id", "").strip()
  if not qid:
    raise BadRecord("missing_field", "empty 'id' cell")
  question = cells.get("question", "").strip()
  if not question:
    raise BadRecord("missing_field", "empty 'question' cell")
  # A column the header lacks is not in `cells`: it gives "", which is no answer.
  answers = _unique_answers(cells.get(c, "").strip() for c in FRESHQA_ANSWER_COLUMNS)
  if not answers:
    raise BadRecord("missing_field", "no answer in the answer_0 .. answer_9 cells")
  metadata: dict[str, Any] = {}
  for name in ("split", "false_premise", "num_hops", "fact_type", "effective_year", "next_review", "source",
               "note"):
    if name in cells:
      metadata[name] = cells[name].strip()
  premise = metadata.get("false_premise", "").upper()
  if premise in ("TRUE", "FALSE"):
    metadata["false_premise"] = premise == "TRUE"
  return QAExample(qid, question, answers, "freshqa", metadata)


def _parquet_rows(path: Path, required: Sequence[str], optional: Sequence[str]) -> Iterator[tuple[int, dict]]:
  """The rows of a parquet file as dicts of the wanted columns, with their 0-based index."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    parquet = pq.ParquetFile(path)
  except (pa.ArrowException, OSError) as e:
    raise CorpusFormatError(str(path), None, f"not a readable parquet file ({e})") from e
  with parquet:
    names = parquet.schema_arrow.names
    missing = [c for c in required if c not in names]
    if missing:
      raise CorpusFormatError(str(path), None, f"missing column {missing[0]!r} (columns: {', '.join(names)})")
    columns = list(required) + [c for c in optional if c in names]
    index = 0
    try:
      for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
          yield index, row
          index += 1
    except pa.ArrowException as e:
      raise CorpusFormatError(str(path), None, f"row {index}: unreadable parquet data ({e})") from e


def read_bamboogle(path: str | os.PathLike, *, skip_bad: bool = False,
                   stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads Bamboogle's parquet (columns `Question`, `Answer`); ids are the row indices."""
  return _read_parquet_format(_checked_path(path), ("Question", "Answer"), (), _bamboogle_example, skip_bad,
                              stats)


def _bamboogle_example(index: int, row: dict) -> QAExample:
  return QAExample(str(index), _text(row, "Question"), [_text(row, "Answer")], "bamboogle", {})


def read_searchr1(path: str | os.PathLike, *, skip_bad: bool = False,
                  stats: QAReadStats | None = None) -> Iterator[QAExample]:
  """Reads Search-R1's parquet (`train.parquet`, `test.parquet`).

  answers = golden_answers, else reward_model.ground_truth.target. The id is the `id` column,
  else extra_info.index, else the row index. source = data_source (else 'searchr1'). metadata
  = the `metadata` column (an object, or JSON text as `write_searchr1_parquet` writes it) plus
  metadata["searchr1"] = {data_source, ability, extra_info}. The prompt is not kept.
  """
  return _read_parquet_format(_checked_path(path), ("question",),
                              ("id", "golden_answers", "data_source", "ability", "reward_model", "extra_info",
                               "metadata"), _searchr1_example, skip_bad, stats)


def _searchr1_example(index: int, row: dict) -> QAExample:
  question = _text(row, "question")
  extra_info = _get(row, "extra_info", dict, optional=True, default={})
  if row.get("id") is not None:
    qid = _id(row, "id")
  elif extra_info.get("index") is not None:
    qid = _id(extra_info, "index")
  else:
    qid = str(index)
  answers = _unique_answers(_str_list(row, "golden_answers", optional=True))
  if not answers:
    reward_model = _get(row, "reward_model", dict, optional=True, default={})
    ground_truth = _get(reward_model, "ground_truth", dict, optional=True, default={})
    target = _get(ground_truth, "target", (list, str), optional=True, default=[])
    answers = _unique_answers(_check_strings("target", target) if isinstance(target, list) else [target])
  if not answers:
    raise BadRecord("missing_field", "no answer in 'golden_answers' nor in reward_model.ground_truth.target")
  metadata = _get(row, "metadata", (dict, str), optional=True, default={})
  if isinstance(metadata, str):
    try:
      metadata = json.loads(metadata) if metadata.strip() else {}
    except json.JSONDecodeError as e:
      raise BadRecord("bad_json", f"column 'metadata' is not JSON ({e.msg})") from e
    if not isinstance(metadata, dict):
      raise BadRecord("wrong_type", f"column 'metadata' should hold an object, got {_json_type(metadata)}")
  data_source = _get(row, "data_source", str, optional=True)
  metadata = dict(metadata)
  metadata["searchr1"] = {"data_source": data_source, "ability": _get(row, "ability", str, optional=True),
                          "extra_info": extra_info}
  return QAExample(qid, question, answers, data_source or "searchr1", metadata)


def _read_parquet_format(path: Path, required: Sequence[str], optional: Sequence[str],
                         convert: Callable[[int, dict], QAExample], skip_bad: bool,
                         stats: QAReadStats | None) -> Iterator[QAExample]:
  policy = SkipOrRaise(skip_bad, QAReadStats() if stats is None else stats)
  # Opened on the first next(), like the other readers; the checks of the whole file (is it
  # parquet, has it the columns) raise then whatever `skip_bad` says.
  rows = ((_Where(label=f"row {index}"), (index, row)) for index, row in _parquet_rows(path, required, optional))
  return _examples(path, rows, lambda indexed_row: convert(*indexed_row), policy)


_READERS: dict[str, Callable[..., Iterator[QAExample]]] = {
    "hotpotqa": read_hotpotqa, "musique": read_musique, "2wiki": read_2wiki, "bamboogle": read_bamboogle,
    "fanoutqa": read_fanoutqa, "freshqa": read_freshqa, "flashrag": read_flashrag, "searchr1": read_searchr1,
}


def read_qa(path: str | os.PathLike,
            format: str = "auto",  # pylint: disable=redefined-builtin
            *,
            skip_bad: bool = False,
            stats: QAReadStats | None = None,
            **kwargs) -> Iterator[QAExample]:
  """Streams the questions of a benchmark file in any supported format.

  Args:
    path: One file of the benchmark.
    format: One of `FORMATS`, or "auto" to decide from the file (see `detect_qa_format`).
    skip_bad: Skip malformed records instead of raising; they are counted in `stats`.
    stats: Filled in while iterating, if given.
    **kwargs: Passed on to the format's reader (`aliases_path` for 2wiki, `source` for flashrag).

  Returns:
    The examples, in file order.

  Raises:
    FileNotFoundError: No such file.
    ValueError: Unknown format name.
    CorpusFormatError: "auto" cannot decide the format (raised at once), or a record is
      malformed and `skip_bad` is off (raised while iterating).
  """
  if format == "auto":
    format = detect_qa_format(path)
  if format not in _READERS:
    raise ValueError(f"unknown QA format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")
  return _READERS[format](path, skip_bad=skip_bad, stats=stats, **kwargs)


def detect_qa_format(path: str | os.PathLike) -> str:
  """Decides the format of a benchmark file from its suffix and its first record.

  `.parquet`: Bamboogle if it has `Question` and `Answer` columns, Search-R1 if it has
  `golden_answers` or `reward_model`. `.csv`: FreshQA. Anything else is read as JSON (a list or
  one record a line) and judged by the first record's fields: `golden_answers` is FlashRAG,
  `answer_aliases`/`question_decomposition`/`paragraphs` MuSiQue, `evidences`/`entity_ids`
  2WikiMultiHopQA, `_id` with `supporting_facts` or `context` HotpotQA, `decomposition` or
  `categories` FanoutQA.

  Raises:
    FileNotFoundError: No such file.
    CorpusFormatError: The format cannot be decided; the message says why.
  """
  path = _checked_path(path)
  name = _bare_name(path).lower()
  if name.endswith(".parquet"):
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    try:
      names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
      raise CorpusFormatError(str(path), None, f"not a readable parquet file ({e})") from e
    if "Question" in names and "Answer" in names:
      return "bamboogle"
    if "golden_answers" in names or "reward_model" in names:
      return "searchr1"
    raise CorpusFormatError(str(path), None, f"cannot tell the QA format of a parquet file with columns "
                            f"{', '.join(names)}; pass format=")
  if name.endswith(".csv"):
    return "freshqa"
  record = _first_json_record(path)
  if record is None:
    raise CorpusFormatError(str(path), None, "the file has no records, so its format cannot be told; pass format=")
  keys = set(record)
  if "golden_answers" in keys:
    return "flashrag"
  if keys & {"answer_aliases", "question_decomposition", "paragraphs"}:
    return "musique"
  if keys & {"evidences", "entity_ids"}:
    return "2wiki"
  if "_id" in keys and keys & {"supporting_facts", "context"}:
    return "hotpotqa"
  if keys & {"decomposition", "categories"}:
    return "fanoutqa"
  if "Q_id" in keys:
    raise CorpusFormatError(str(path), None, "this is a 2WikiMultiHopQA alias file (Q_id, aliases, demonyms); "
                            "read the questions file next to it with format='2wiki'")
  raise CorpusFormatError(str(path), None, f"cannot tell the QA format from the first record's fields "
                          f"{sorted(keys)}; pass format=")


# ---------------------------------------------------------------------------------------------
# Writing JSON records.


def _write_jsonl(records: Iterable[dict], path: str | os.PathLike, *, overwrite: bool) -> int:
  count = 0
  with atomic_text(path, overwrite=overwrite) as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False))
      f.write("\n")
      count += 1
  return count


def _write_json_list(records: Iterable[dict], path: str | os.PathLike, *, overwrite: bool) -> int:
  """Writes a JSON list one record a line, without holding the list in memory."""
  count = 0
  with atomic_text(path, overwrite=overwrite) as f:
    f.write("[")
    for record in records:
      f.write(",\n" if count else "\n")
      f.write(json.dumps(record, ensure_ascii=False))
      count += 1
    f.write("\n]\n" if count else "]\n")
  return count


# ---------------------------------------------------------------------------------------------
# The world's questions.


def _answers(question: Question) -> list[str]:
  return _unique_answers([question.answer] + list(question.aliases))


def _world_metadata(question: Question) -> dict[str, Any]:
  return {"type": question.type, "hops": question.hops, "evidence": question.evidence,
          "fact_ids": question.fact_ids, "entity_ids": question.entity_ids, "split": question.split,
          "sub_questions": question.sub_questions}


class _WorldPages:
  """The world's pages (an entity's passages in order) and where each fact is stated."""

  def __init__(self, world: World):
    self.world = world
    self.facts = {f.id: f for f in world.facts}
    self.pages: dict[str, list[WorldPassage]] = {}
    self.passage_index: dict[str, int] = {}
    for i, passage in enumerate(world.passages):
      self.pages.setdefault(passage.entity, []).append(passage)
      self.passage_index[passage.id] = i
    self.page_order = list(self.pages)
    self.page_index = {entity: i for i, entity in enumerate(self.page_order)}
    self._sentences: dict[str, list[str]] = {}

  def title(self, entity: str) -> str:
    return self.pages[entity][0].title

  def sentences(self, entity: str) -> list[str]:
    """The sentences of an entity's whole page: its passages' sentences in passage order."""
    sentences = self._sentences.get(entity)
    if sentences is None:
      sentences = self._sentences[entity] = [s for p in self.pages[entity] for s in p.sentences()]
    return sentences

  def locate(self, fact_id: int) -> tuple[WorldPassage, int]:
    """The passage of the fact's subject's page stating the fact, and the sentence's index on the page.

    Raises:
      ValueError: The subject's page does not state the fact.
    """
    fact = self.facts[fact_id]
    offset = 0
    for passage in self.pages.get(fact.subject, []):
      if fact_id in passage.facts:
        return passage, offset + passage.fact_sentences[passage.facts.index(fact_id)]
      offset += len(passage.sentence_starts)
    name = self.world.entities[fact.subject].name
    raise ValueError(f"fact {fact_id} ({fact.relation} of {name}) is not stated on the page of {name}")


def _sample_others(rng: random.Random, population: int, k: int, exclude: set[int]) -> list[int]:
  """`k` distinct indices below `population` outside `exclude` (all of them if there are fewer)."""
  available = population - len(exclude)
  if available <= k:
    return [i for i in range(population) if i not in exclude]
  chosen: dict[int, None] = {}
  while len(chosen) < k:
    i = rng.randrange(population)
    if i not in exclude:
      chosen[i] = None
  return list(chosen)


def _supporting_facts(pages: _WorldPages, question: Question) -> tuple[list[str], list[list]]:
  """The pages of the question's evidence (in order of first use) and its `[title, sent_id]` pairs."""
  entities: dict[str, None] = {}
  supporting: list[list] = []
  for fact_id in question.fact_ids:
    passage, sent_id = pages.locate(fact_id)
    entities[passage.entity] = None
    pair = [passage.title, sent_id]
    if pair not in supporting:
      supporting.append(pair)
  return list(entities), supporting


def _page_context(pages: _WorldPages, support: list[str], rng: random.Random,
                  num_distractors: int) -> list[list]:
  """HotpotQA's `context`: the supporting pages and random other pages, shuffled, as [title, sentences]."""
  exclude = {pages.page_index[e] for e in support}
  distractors = [pages.page_order[i] for i in _sample_others(rng, len(pages.page_order), num_distractors, exclude)]
  entities = support + distractors
  rng.shuffle(entities)
  return [[pages.title(e), pages.sentences(e)] for e in entities]


def _hotpotqa_record(pages: _WorldPages, question: Question, num_distractors: int, seed: int) -> dict:
  support, supporting_facts = _supporting_facts(pages, question)
  rng = random.Random(f"hotpotqa-{seed}-{question.id}")
  return {"_id": question.id, "question": question.question, "answer": question.answer,
          "type": _HOTPOT_TYPES[question.type], "level": "hard" if question.hops >= 3 else "medium",
          "supporting_facts": supporting_facts,
          "context": _page_context(pages, support, rng, num_distractors)}


def _musique_record(pages: _WorldPages, question: Question, num_paragraphs: int, seed: int) -> dict:
  rng = random.Random(f"musique-{seed}-{question.id}")
  fact_passages = [pages.locate(fact_id)[0] for fact_id in question.fact_ids]
  supporting = list(dict.fromkeys(pages.passage_index[p.id] for p in fact_passages))
  distractors = _sample_others(rng, len(pages.world.passages), max(0, num_paragraphs - len(supporting)),
                               set(supporting))
  order = supporting + distractors
  rng.shuffle(order)
  position = {passage_index: idx for idx, passage_index in enumerate(order)}
  paragraphs = []
  for idx, passage_index in enumerate(order):
    passage = pages.world.passages[passage_index]
    paragraphs.append({"idx": idx, "title": passage.title, "paragraph_text": passage.text,
                       "is_supporting": passage_index in supporting})
  decomposition = []
  for fact_id, passage, (sub_question, sub_answer) in zip(question.fact_ids, fact_passages, question.sub_questions):
    decomposition.append({"id": fact_id, "question": sub_question, "answer": sub_answer,
                          "paragraph_support_idx": position[pages.passage_index[passage.id]]})
  return {"id": question.id, "paragraphs": paragraphs, "question": question.question,
          "question_decomposition": decomposition, "answer": question.answer,
          "answer_aliases": list(question.aliases), "answerable": True}


def _answer_entity(pages: _WorldPages, question: Question) -> str | None:
  """The id of the entity the question's answer names, if it names one.

  Only the question's topic entities (a comparison answers with one of them) and the entities
  its facts lead to (a chain answers with the last) can be the answer.
  """
  candidates = list(question.entity_ids)
  for fact_id in question.fact_ids:
    fact = pages.facts[fact_id]
    if fact.is_entity_valued:
      candidates.append(fact.obj)
  for entity in candidates:
    if pages.world.entities[entity].name == question.answer:
      return entity
  return None


def _twowiki_record(pages: _WorldPages, question: Question, answer_id: str, num_distractors: int,
                    seed: int) -> dict:
  support, supporting_facts = _supporting_facts(pages, question)
  rng = random.Random(f"2wiki-{seed}-{question.id}")
  evidences_id = []
  for fact_id, (_, relation, obj_text) in zip(question.fact_ids, question.evidence):
    fact = pages.facts[fact_id]
    evidences_id.append([fact.subject, relation, fact.obj if fact.is_entity_valued else obj_text])
  return {"_id": question.id, "type": question.type, "question": question.question,
          "context": _page_context(pages, support, rng, num_distractors),
          "supporting_facts": supporting_facts, "evidences": question.evidence, "answer": question.answer,
          "entity_ids": "_".join(question.entity_ids), "answer_id": answer_id, "evidences_id": evidences_id}


# ---------------------------------------------------------------------------------------------
# Public writers.


def write_flashrag(records: Iterable[Question | QAExample], path: str | os.PathLike, *,
                   overwrite: bool = False) -> int:
  """Writes FlashRAG's unified jsonl: `{"id", "question", "golden_answers", "metadata"}` a line.

  Args:
    records: World questions (golden_answers = answer + aliases; metadata: type, hops, evidence,
      fact_ids, entity_ids, split, sub_questions) or `QAExample`s (their answers and metadata).
    path: The file to write.
    overwrite: Replace an existing file.

  Returns:
    The number of records written.
  """
  def lines() -> Iterator[dict]:
    for record in records:
      example = question_to_example(record) if isinstance(record, Question) else record
      yield {"id": example.id, "question": example.question, "golden_answers": list(example.answers),
             "metadata": example.metadata}
  return _write_jsonl(lines(), path, overwrite=overwrite)


def write_hotpotqa(world: World, questions: Iterable[Question], path: str | os.PathLike,
                   num_distractors: int = 8, seed: int = 0, *, overwrite: bool = False) -> int:
  """Writes world questions as HotpotQA's distractor setting (a JSON list).

  Each record: `_id, question, answer, type` (compositional and inference questions are 'bridge',
  comparisons 'comparison'), `level` ('hard' from 3 hops, else 'medium'), `supporting_facts`
  (`[title, sent_id]` of the sentence stating each evidence fact on its subject's page, sent_id
  counting the sentences of the whole page), and `context`: the supporting pages and
  `num_distractors` random other pages, in random order, each as `[title, [sentences]]`.
  Distractors and order are drawn from `seed` and the question id. Aliases are lost: HotpotQA
  has none.

  Returns:
    The number of records written.
  """
  pages = _WorldPages(world)
  return _write_json_list((_hotpotqa_record(pages, q, num_distractors, seed) for q in questions), path,
                          overwrite=overwrite)


def write_musique(world: World, questions: Iterable[Question], path: str | os.PathLike,
                  num_paragraphs: int = 20, seed: int = 0, *, overwrite: bool = False) -> int:
  """Writes world questions as MuSiQue-Ans (jsonl).

  Each record: `id, paragraphs, question, question_decomposition, answer, answer_aliases,
  answerable` (always true). The supporting paragraphs are the passages of each evidence fact's
  subject's page that state it; random other passages fill up to `num_paragraphs`, in random
  order (from `seed` and the question id). The decomposition has one step per fact, in order,
  from the question's sub-questions: `{id (the fact id), question, answer, paragraph_support_idx}`.

  Returns:
    The number of records written.
  """
  pages = _WorldPages(world)
  return _write_jsonl((_musique_record(pages, q, num_paragraphs, seed) for q in questions), path,
                      overwrite=overwrite)


def write_2wiki(world: World, questions: Iterable[Question], out_dir: str | os.PathLike, seed: int = 0, *,
                num_distractors: int = 8, overwrite: bool = False) -> dict[str, int]:
  """Writes world questions as 2WikiMultiHopQA: `train.json`, `dev.json`, `test.json`, `id_aliases.json`.

  Questions go to the file of their split. Records: `_id, type, question, context,
  supporting_facts, evidences, answer, entity_ids` (ids joined by '_'), with `context` and
  `supporting_facts` built as in `write_hotpotqa`, plus `answer_id` and `evidences_id` (subject
  id, relation, object id or value), which the official evaluation script reads. `answer_id` is
  the answer's entity when the answer names one, else the question's own `_id`.

  `id_aliases.json` (one `{Q_id, aliases, demonyms}` a line) has an entry for every entity that
  answers some question (its aliases from those questions; a country's demonym under
  `demonyms`), and one keyed by the question `_id` for each answer that is not an entity but
  has aliases (dates, numbers), so that `read_2wiki` gives back every alias.

  Args:
    world: The world the questions come from.
    questions: The questions to write.
    out_dir: The directory to write; replaced as a whole.
    num_distractors: Random other pages in each context.
    seed: Seed of the distractors and of the context order.
    overwrite: Replace an existing `out_dir`.

  Returns:
    Records written per file name.
  """
  pages = _WorldPages(world)
  by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
  aliases: dict[str, tuple[list[str], list[str]]] = {}
  for question in questions:
    entity = _answer_entity(pages, question)
    answer_id = entity or question.id
    demonym = world.entities[entity].attrs.get("demonym") if entity else None
    demonyms = [demonym] if demonym and world.entities[entity].kind == "country" else []
    names = [a for a in question.aliases if a not in demonyms and a != question.answer]
    if entity or names:
      known_names, known_demonyms = aliases.setdefault(answer_id, ([], []))
      known_names.extend(n for n in names if n not in known_names)
      known_demonyms.extend(d for d in demonyms if d not in known_demonyms)
    by_split.setdefault(question.split, []).append(_twowiki_record(pages, question, answer_id, num_distractors, seed))
  counts = {}
  with atomic_output(out_dir, overwrite=overwrite, directory=True) as tmp:
    for split, records in by_split.items():
      counts[f"{split}.json"] = _write_json_list(records, tmp / f"{split}.json", overwrite=False)
    counts[TWOWIKI_ALIASES] = _write_jsonl(
        ({"Q_id": qid, "aliases": names, "demonyms": demonyms} for qid, (names, demonyms) in aliases.items()),
        tmp / TWOWIKI_ALIASES, overwrite=False)
  return counts


def write_world_questions(world: World, out_dir: str | os.PathLike, formats: Sequence[str], *,
                          seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
  """Writes the world's questions in real benchmark formats, one directory per format.

  Layout under `out_dir`, per split (train, dev, test; a split without questions gets empty
  files):

    flashrag/{split}.jsonl
    hotpotqa/hotpot_{split}_distractor_v1.json
    musique/musique_ans_v1.0_{split}.jsonl
    2wiki/{train,dev,test}.json and 2wiki/id_aliases.json

  Args:
    world: The world whose questions to write.
    out_dir: The parent directory (created if needed).
    formats: Any of `WORLD_FORMATS`.
    seed: Seed of distractor pages and paragraphs.
    overwrite: Replace existing format directories.

  Returns:
    The directory written per format.
  """
  unknown = [f for f in formats if f not in WORLD_FORMATS]
  if unknown:
    raise ValueError(f"unknown QA formats {unknown}; choose from {', '.join(WORLD_FORMATS)}")
  out = Path(out_dir)
  by_split = {split: [q for q in world.questions if q.split == split] for split in SPLITS}
  written = {}
  for fmt in dict.fromkeys(formats):
    target = out / fmt
    if fmt == "2wiki":
      write_2wiki(world, world.questions, target, seed=seed, overwrite=overwrite)
    else:
      with atomic_output(target, overwrite=overwrite, directory=True) as tmp:
        for split, questions in by_split.items():
          if fmt == "flashrag":
            write_flashrag(questions, tmp / f"{split}.jsonl")
          elif fmt == "hotpotqa":
            write_hotpotqa(world, questions, tmp / f"hotpot_{split}_distractor_v1.json", seed=seed)
          else:
            write_musique(world, questions, tmp / f"musique_ans_v1.0_{split}.jsonl", seed=seed)
    written[fmt] = target
  return written


def write_searchr1_parquet(examples: Iterable[QAExample | Question], path: str | os.PathLike, *,
                           split: str = "test", data_source: str | None = None,
                           prompt_template: str = SEARCH_R1_PROMPT, ability: str = "fact-reasoning",
                           overwrite: bool = False) -> int:
  """Writes examples as Search-R1's parquet, ready for its training or evaluation scripts.

  Columns: id, question, golden_answers (the answers), data_source (`data_source`, else the
  example's source), prompt (`[{"role": "user", "content": prompt_template.format(question=...)}]`),
  ability, reward_model (`{"style": "rule", "ground_truth": {"target": answers}}`), extra_info
  (`{"split", "index"}`), and metadata as JSON text (a column of objects whose keys differ from
  row to row has no single parquet type).

  Returns:
    The number of rows written.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  schema = pa.schema([
      ("id", pa.string()), ("question", pa.string()), ("golden_answers", pa.list_(pa.string())),
      ("data_source", pa.string()),
      ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
      ("ability", pa.string()),
      ("reward_model", pa.struct([("style", pa.string()),
                                  ("ground_truth", pa.struct([("target", pa.list_(pa.string()))]))])),
      ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
      ("metadata", pa.string()),
  ])
  count = 0
  with atomic_output(path, overwrite=overwrite, directory=False) as tmp:
    with pq.ParquetWriter(tmp, schema) as writer:
      rows: list[dict] = []
      for record in examples:
        example = question_to_example(record) if isinstance(record, Question) else record
        rows.append({
            "id": example.id, "question": example.question, "golden_answers": list(example.answers),
            "data_source": data_source or example.source,
            "prompt": [{"role": "user", "content": prompt_template.format(question=example.question.strip())}],
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": {"target": list(example.answers)}},
            "extra_info": {"split": split, "index": count},
            "metadata": json.dumps(example.metadata, ensure_ascii=False),
        })
        count += 1
        if len(rows) == _PARQUET_BATCH_ROWS:
          writer.write_table(pa.Table.from_pylist(rows, schema=schema))
          rows = []
      if rows or not count:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
  return count
