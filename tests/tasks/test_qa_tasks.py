"""Tests of the downstream QA tasks (tasks/qa.py)."""

from __future__ import annotations

import pytest
import seqio

from masksearch_jax.agent import protocol
from masksearch_jax.data import qa_formats


def _all(name, split):
  ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 512, "targets": 64}, split=split, shuffle=False,
                                                   num_epochs=1)
  return list(ds.as_numpy_iterator())


def test_world_questions_keep_answers_and_aliases(tiny_tasks, tiny_world):
  expected = {q.id: q for q in tiny_world.questions if q.split == "dev"}
  examples = _all("qa_world", "validation")
  assert {ex["id"].decode() for ex in examples} == set(expected)
  for ex in examples:
    q = expected[ex["id"].decode()]
    assert ex["inputs_pretokenized"].decode() == protocol.qa_prompt(q.question)
    assert [a.decode() for a in ex["answers"]] == [q.answer, *q.aliases]
    assert ex["targets_pretokenized"].decode() == q.answer


@pytest.mark.parametrize("benchmark,writer", [("hotpotqa", "write_hotpotqa"), ("musique", "write_musique"),
                                              ("flashrag", "write_flashrag")])
def test_benchmark_files_come_from_gin(tiny_tasks, tiny_world, tmp_path, benchmark, writer):
  questions = [q for q in tiny_world.questions if q.split == "test"]
  path = tmp_path / f"{benchmark}.json{'l' if benchmark != 'hotpotqa' else ''}"
  if writer == "write_flashrag":
    qa_formats.write_flashrag(questions, path)
  else:
    getattr(qa_formats, writer)(tiny_world, questions, path)
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.QAFiles.{benchmark} = {{'test': '{path}'}}")
  examples = _all(f"qa_{benchmark}", "test")
  assert [ex["question"].decode() for ex in examples] == [q.question for q in questions]
  for ex, q in zip(examples, questions):
    answers = [a.decode() for a in ex["answers"]]
    assert answers[0] == q.answer
    if benchmark != "hotpotqa":  # HotpotQA has no aliases.
      assert answers[1:] == q.aliases


def test_twowiki_aliases_come_through(tiny_tasks, tiny_world, tmp_path):
  qa_formats.write_2wiki(tiny_world, tiny_world.questions, tmp_path / "2wiki")
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.QAFiles.twowiki = '{tmp_path / '2wiki' / 'dev.json'}'")
  examples = _all("qa_2wiki", "validation")
  dev = [q for q in tiny_world.questions if q.split == "dev"]
  assert len(examples) == len(dev)
  by_question = {q.question: q for q in dev}
  for ex in examples:
    q = by_question[ex["question"].decode()]
    assert set(q.aliases) <= {a.decode() for a in ex["answers"]}


def test_missing_benchmark_file_setting_is_a_clear_error(tiny_tasks):
  with pytest.raises(ValueError, match=r"set QAFiles\.musique in Gin"):
    _all("qa_musique", "test")


def test_missing_benchmark_file_is_a_clear_error(tiny_tasks, tmp_path):
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.QAFiles.bamboogle = '{tmp_path / 'nope.parquet'}'")
  with pytest.raises(FileNotFoundError, match="nope.parquet does not exist"):
    _all("qa_bamboogle", "test")


def test_split_missing_from_a_split_dict_is_named(tiny_tasks, tmp_path):
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.QAFiles.hotpotqa = {{'validation': '{tmp_path}/x.json'}}")
  with pytest.raises(ValueError, match=r"no 'test' split"):
    _all("qa_hotpotqa", "test")


def _write_small_benchmarks(directory):
  """One small file in each of the formats the world does not export."""
  import csv
  import json

  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"Question": ["Who founded Bubu Press?", "Where was Vabonu Dutufuzo born?"],
                           "Answer": ["Mose Fasare", "Tihozu"]}), directory / "bamboogle.parquet")
  (directory / "fanout.json").write_text(json.dumps([
      {"id": "f1", "question": "Which rivers rise on Mount Pekado?", "decomposition": [],
       "answer": ["Talu River", "Kilo River"], "categories": []},
      {"id": "f2", "question": "Is Lazera independent?", "decomposition": [], "answer": True, "categories": []}]))
  header = ["id", "split", "question", "effective_year", "next_review", "false_premise", "num_hops", "fact_type",
            "source", *[f"answer_{i}" for i in range(10)], "note"]
  with open(directory / "freshqa.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["FreshQA, exported", *[""] * (len(header) - 1)])
    writer.writerow(["", *[""] * (len(header) - 1)])
    writer.writerow(header)
    writer.writerow(["0", "TEST", "What is the capital of Lazera?", "2024", "", "FALSE", "one-hop", "never-changing",
                     "", "Tuhodo", "Tuhodo city", *[""] * 8, ""])
  qa_formats.write_searchr1_parquet([qa_formats.QAExample("s1", "Who wrote Winter in Dulilide?", ["Huroto Sage"],
                                                          "world")], directory / "searchr1.parquet")


@pytest.mark.parametrize("benchmark,file,question,answers", [
    ("bamboogle", "bamboogle.parquet", "Who founded Bubu Press?", ["Mose Fasare"]),
    ("fanoutqa", "fanout.json", "Which rivers rise on Mount Pekado?", ["Talu River\nKilo River"]),
    ("freshqa", "freshqa.csv", "What is the capital of Lazera?", ["Tuhodo", "Tuhodo city"]),
    ("searchr1", "searchr1.parquet", "Who wrote Winter in Dulilide?", ["Huroto Sage"]),
])
def test_other_benchmark_formats_make_tasks(tiny_tasks, tmp_path, benchmark, file, question, answers):
  _write_small_benchmarks(tmp_path)
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.QAFiles.{benchmark} = '{tmp_path / file}'")
  first = _all(f"qa_{benchmark}", "test")[0]
  assert first["question"].decode() == question
  assert [a.decode() for a in first["answers"]] == answers
  assert first["inputs_pretokenized"].decode() == protocol.qa_prompt(question)
