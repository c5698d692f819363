"""Predictions in each benchmark's official shape, so outside scorers can read them.

  hotpotqa  `hotpot_evaluate_v1.py`'s prediction file: one JSON object
            `{"answer": {id: text}, "sp": {id: [[title, sentence], ...]}}`. The agent predicts no
            supporting facts, so every `sp` list is empty (the script then scores sp and joint
            metrics 0, and the answer metrics as usual).
  2wiki     2WikiMultiHopQA's `2wikimultihop_evaluate_v1.1.py` file: HotpotQA's object plus
            `"evidence": {id: [[subject, relation, object], ...]}` (empty lists here).
  musique   MuSiQue's `evaluate_v1.0.py` file: JSON lines `{"id", "predicted_answer",
            "predicted_support_idxs", "predicted_answerable"}` in the order of the gold file
            (the script pairs lines by position); support indices are empty and a question
            counts as answerable when the agent gave an answer.
  fanoutqa  FanoutQA's `fanoutqa.eval.evaluate` answers: a JSON list of `{"id", "answer"}`.
  flashrag  FlashRAG's unified jsonl with its output: `{"id", "question", "golden_answers",
            "metadata", "output": {"pred": text}}` a line, which FlashRAG's evaluator reads
            (and which any benchmark can be written as).

A question without an answer is written with the empty string (what the scripts score as a
wrong answer). Every file is written atomically (`data.atomic_files`). `read_predictions`
reads any of these shapes back into `{id: answer}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from masksearch_jax.data.atomic_files import atomic_text
from masksearch_jax.data.qa_formats import QAExample

SHAPES = ("hotpotqa", "2wiki", "musique", "fanoutqa", "flashrag")
FILE_NAMES = {"hotpotqa": "hotpotqa.json", "2wiki": "2wiki.json", "musique": "musique.jsonl",
              "fanoutqa": "fanoutqa.json", "flashrag": "flashrag.jsonl"}
# The official shapes written for each benchmark, besides FlashRAG's (written for every one).
BENCHMARK_SHAPES = {"hotpotqa": ("hotpotqa",), "2wiki": ("2wiki",), "musique": ("musique",),
                    "fanoutqa": ("fanoutqa",), "world": ("hotpotqa", "2wiki")}

Pairs = Sequence[tuple[QAExample, "str | None"]]


def shapes_for(benchmark: str) -> tuple[str, ...]:
  """The prediction shapes written for a benchmark: its official ones, then FlashRAG's."""
  return (*BENCHMARK_SHAPES.get(benchmark, ()), "flashrag")


def _dump(value, path: Path, overwrite: bool) -> None:
  with atomic_text(path, overwrite=overwrite) as f:
    json.dump(value, f, ensure_ascii=False, indent=1)
    f.write("\n")


def _dump_lines(records: Iterable[dict], path: Path, overwrite: bool) -> None:
  with atomic_text(path, overwrite=overwrite) as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_hotpotqa(pairs: Pairs, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """HotpotQA's `{"answer": {id: text}, "sp": {id: []}}`."""
  _dump({"answer": {e.id: a or "" for e, a in pairs}, "sp": {e.id: [] for e, _ in pairs}}, Path(path), overwrite)
  return Path(path)


def write_2wiki(pairs: Pairs, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """2WikiMultiHopQA's `{"answer": {id: text}, "sp": {id: []}, "evidence": {id: []}}`."""
  _dump({"answer": {e.id: a or "" for e, a in pairs}, "sp": {e.id: [] for e, _ in pairs},
         "evidence": {e.id: [] for e, _ in pairs}}, Path(path), overwrite)
  return Path(path)


def write_musique(pairs: Pairs, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """MuSiQue's jsonl, one line per question in the given (gold file) order."""
  _dump_lines(({"id": e.id, "predicted_answer": a or "", "predicted_support_idxs": [],
                "predicted_answerable": a is not None} for e, a in pairs), Path(path), overwrite)
  return Path(path)


def write_fanoutqa(pairs: Pairs, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """FanoutQA's `[{"id", "answer"}]`."""
  _dump([{"id": e.id, "answer": a or ""} for e, a in pairs], Path(path), overwrite)
  return Path(path)


def write_flashrag(pairs: Pairs, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """FlashRAG's unified jsonl with `output.pred`."""
  _dump_lines(({"id": e.id, "question": e.question, "golden_answers": list(e.answers), "metadata": e.metadata,
                "output": {"pred": a or ""}} for e, a in pairs), Path(path), overwrite)
  return Path(path)


WRITERS = {"hotpotqa": write_hotpotqa, "2wiki": write_2wiki, "musique": write_musique, "fanoutqa": write_fanoutqa,
           "flashrag": write_flashrag}


def write_predictions(pairs: Pairs, out_dir: str | os.PathLike, benchmark: str, *, overwrite: bool = False
                      ) -> dict[str, Path]:
  """Writes the shapes of `shapes_for(benchmark)` into `out_dir`; returns the file of each shape."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  return {shape: WRITERS[shape](pairs, out / FILE_NAMES[shape], overwrite=overwrite) for shape in shapes_for(benchmark)}


def read_predictions(path: str | os.PathLike, shape: str) -> dict[str, str]:
  """The answers of a prediction file of `shape`, by question id.

  Raises:
    ValueError: Unknown shape.
    FileNotFoundError: No such file.
  """
  path = Path(path)
  if shape in ("hotpotqa", "2wiki"):
    return dict(json.loads(path.read_text(encoding="utf-8"))["answer"])
  if shape == "fanoutqa":
    return {r["id"]: r["answer"] for r in json.loads(path.read_text(encoding="utf-8"))}
  if shape in ("musique", "flashrag"):
    answers = {}
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          record = json.loads(line)
          answers[record["id"]] = record["predicted_answer"] if shape == "musique" else record["output"]["pred"]
    return answers
  raise ValueError(f"unknown prediction shape {shape!r}; expected one of {', '.join(SHAPES)}")
