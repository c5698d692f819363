"""Predictions in the benchmarks' official shapes: exact structure, order and round trips."""

from __future__ import annotations

import json

import pytest

from masksearch_jax.data.qa_formats import QAExample
from masksearch_jax.eval import predictions

EXAMPLES = [QAExample("q2", "Who directed Kelo?", ["Tabudo Muzu"], "musique", {"answerable": True}),
            QAExample("q1", "Is Vitole a city?", ["yes"], "musique", {}),
            QAExample("q3", "When was Rani born?", ["3 May 1921", "1921-05-03"], "musique", {})]
PAIRS = [(EXAMPLES[0], "Tabudo Muzu"), (EXAMPLES[1], None), (EXAMPLES[2], "1921")]


def test_hotpotqa_and_2wiki_shapes(tmp_path):
  hotpot = json.loads(predictions.write_hotpotqa(PAIRS, tmp_path / "h.json").read_text())
  assert hotpot == {"answer": {"q2": "Tabudo Muzu", "q1": "", "q3": "1921"}, "sp": {"q2": [], "q1": [], "q3": []}}
  wiki = json.loads(predictions.write_2wiki(PAIRS, tmp_path / "w.json").read_text())
  assert set(wiki) == {"answer", "sp", "evidence"} and wiki["evidence"] == {"q2": [], "q1": [], "q3": []}
  assert wiki["answer"] == hotpot["answer"]


def test_musique_lines_keep_the_gold_order(tmp_path):
  lines = predictions.write_musique(PAIRS, tmp_path / "m.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["id"] for r in records] == ["q2", "q1", "q3"]
  assert records[0] == {"id": "q2", "predicted_answer": "Tabudo Muzu", "predicted_support_idxs": [],
                        "predicted_answerable": True}
  assert records[1]["predicted_answer"] == "" and records[1]["predicted_answerable"] is False


def test_flashrag_and_fanoutqa_shapes(tmp_path):
  records = [json.loads(line) for line in predictions.write_flashrag(PAIRS, tmp_path / "f.jsonl").read_text().splitlines()]
  assert records[2] == {"id": "q3", "question": "When was Rani born?", "golden_answers": ["3 May 1921", "1921-05-03"],
                        "metadata": {}, "output": {"pred": "1921"}}
  fanout = json.loads(predictions.write_fanoutqa(PAIRS, tmp_path / "fo.json").read_text())
  assert fanout == [{"id": "q2", "answer": "Tabudo Muzu"}, {"id": "q1", "answer": ""}, {"id": "q3", "answer": "1921"}]


@pytest.mark.parametrize("benchmark", ["hotpotqa", "2wiki", "musique", "fanoutqa", "world", "bamboogle"])
def test_every_shape_round_trips(tmp_path, benchmark):
  written = predictions.write_predictions(PAIRS, tmp_path / "p", benchmark)
  assert list(written) == [*predictions.BENCHMARK_SHAPES.get(benchmark, ()), "flashrag"]
  for shape, path in written.items():
    assert path.name == predictions.FILE_NAMES[shape]
    assert predictions.read_predictions(path, shape) == {"q2": "Tabudo Muzu", "q1": "", "q3": "1921"}


def test_writes_are_atomic_and_refuse_to_overwrite(tmp_path):
  path = predictions.write_hotpotqa(PAIRS, tmp_path / "h.json")
  with pytest.raises(FileExistsError):
    predictions.write_hotpotqa(PAIRS[:1], path)
  assert len(json.loads(path.read_text())["answer"]) == 3
  predictions.write_hotpotqa(PAIRS[:1], path, overwrite=True)
  assert list(json.loads(path.read_text())["answer"]) == ["q2"]
  assert [p.name for p in tmp_path.iterdir()] == ["h.json"]  # No temporary left behind.
  with pytest.raises(ValueError, match="unknown prediction shape"):
    predictions.read_predictions(path, "squad")
