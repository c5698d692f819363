"""`evaluate`: the search agent (or a baseline) over one benchmark, scored and written to a run directory.

A run directory holds one method (one checkpoint, mode and seed) evaluated on any number of
benchmarks, one sub-directory per benchmark label:

  RUN_DIR/
    report.md, report.json, report.png   every benchmark of the run (`report.write_report`)
    LABEL/
      settings.json        what was asked (compared when an interrupted run is resumed)
      trajectories.jsonl   the episodes, appended as they finish (a rerun continues it)
      records.jsonl        one line per question, in file order: id, question, golds,
                           prediction (null: none), stop reason, searches, turns, failed
                           searches, em, f1, recall, judge verdict
      predictions/         the official prediction shapes (`predictions.py`)
      result.json          written last: the settings and the metrics

The metrics (`result.json`'s "metrics"): `recall` (token-level recall, MaskSearch's metric),
`em` and `f1` (`metrics.score_answer`, the maximum over the gold answer and its aliases, F1 by
the benchmark's official rule) as means over the scored questions (MuSiQue's unanswerable
questions are not scored, as its script does); `judge` (LLM-judge accuracy over the questions
the judge gave a verdict on; an unanswered question is judged wrong without asking) when a
judge is configured; `avg_searches` and `avg_turns` per question; and `failures`: `no_answer`
(the episode ended without an `<answer>`, whatever the reason), `over_length` (the token budget
ran out), `max_turns`, `eos` (ended without answering) and `search_errors` (questions with at
least one failed search).

Evaluation decodes greedily by default (`runs/eval.gin` sets `RolloutConfig.temperature = 0`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import gin

# Modules with Gin configurables are imported here, before any Gin file is parsed.
from masksearch_jax.agent import rollout as rollout_lib
from masksearch_jax.agent import synthesis  # noqa: F401 -- `@synthesis.LLMJudge()` for `judge`.
from masksearch_jax.data import seqio_tasks
from masksearch_jax.data.atomic_files import atomic_text, remove
from masksearch_jax.data.qa_formats import QAExample
from masksearch_jax.errors import ConfigError
from masksearch_jax.eval import baselines, benchmarks, metrics, predictions
from masksearch_jax.models import span_scorer

logger = logging.getLogger(__name__)

RESULT = "result.json"
SETTINGS = "settings.json"
RECORDS = "records.jsonl"
TRAJECTORIES = "trajectories.jsonl"
PREDICTIONS = "predictions"
METRIC_NAMES = ("recall", "em", "f1", "judge")
# Settings that must agree for a resumed run, and between the benchmarks of one run directory.
_RUN_KEYS = ("method", "seed")


@dataclasses.dataclass
class EvalResult:
  """What `evaluate` wrote for one benchmark.

  Attributes:
    directory: The benchmark's directory inside the run directory.
    settings: The run's settings (method, benchmark, label, checkpoint, mode, seed, ...).
    metrics: The metrics (see the module docstring).
    seconds: Wall time of the evaluation (0 when it was already done).
    resumed: Episodes reused from an interrupted run.
    already_done: The evaluation had finished before; nothing ran.
  """

  directory: Path
  settings: dict
  metrics: dict
  seconds: float = 0.0
  resumed: int = 0
  already_done: bool = False

  def summary_line(self) -> str:
    m, s = self.metrics, self.settings
    failures = m["failures"]
    judge = f", judge {m['judge']:.1%}" if m.get("judge") is not None else ""
    return (f"{s['method']} on {s['label']} ({m['questions']:,} questions, {s['mode']}): recall {m['recall']:.1%}, "
            f"EM {m['em']:.1%}, F1 {m['f1']:.1%}{judge}; {m['avg_searches']:.2f} searches and {m['avg_turns']:.2f} "
            f"turns per question; {failures['no_answer']} without an answer, {failures['over_length']} over length, "
            f"{failures['search_errors']} with search errors; {self.seconds:.1f}s -> {self.directory}")


def score_record(example: QAExample, trajectory: Any, index: int, benchmark: str, *, rag: bool = False) -> dict:
  """The record of one question: its prediction, scores and the episode's counts."""
  answer = trajectory.answer
  scores = metrics.score_answer(answer, example.answers, metrics.f1_rule(benchmark))
  meta = trajectory.meta or {}
  errors = list(meta.get("search_errors") or []) + list(meta.get("retrieval_errors") or [])
  return {"index": index, "id": example.id, "question": example.question, "golds": list(example.answers),
          "prediction": answer, "stop_reason": trajectory.stop_reason,
          "searches": len(trajectory.searches) + (1 if rag else 0), "turns": int(meta.get("turns", 0)),
          "search_errors": len(errors), "scored": _scored(example, benchmark),
          "em": scores.em, "f1": scores.f1, "recall": scores.recall, "judge": None}


def _scored(example: QAExample, benchmark: str) -> bool:
  """Whether the answer metrics count the question (MuSiQue's script skips unanswerable ones)."""
  return not (benchmark == "musique" and example.metadata.get("answerable") is False)


def summarize(records: Sequence[dict]) -> dict:
  """The metrics of a benchmark from its question records (see the module docstring)."""
  scored = [r for r in records if r["scored"]]
  judged = [r for r in records if r["judge"] is not None]
  count = max(len(records), 1)

  def mean(rows, key):
    return sum(float(r[key]) for r in rows) / len(rows) if rows else 0.0
  failures = {"no_answer": sum(r["prediction"] is None for r in records),
              "over_length": sum(r["stop_reason"] == "max_length" for r in records),
              "max_turns": sum(r["stop_reason"] == "max_turns" for r in records),
              "eos": sum(r["stop_reason"] == "eos" for r in records),
              "search_errors": sum(r["search_errors"] > 0 for r in records),
              "failed_searches": sum(r["search_errors"] for r in records)}
  return {"questions": len(records), "scored": len(scored), "recall": mean(scored, "recall"),
          "em": mean(scored, "em"), "f1": mean(scored, "f1"),
          "judge": mean(judged, "judge") if judged else None, "judged": len(judged),
          "avg_searches": sum(r["searches"] for r in records) / count,
          "avg_turns": sum(r["turns"] for r in records) / count, "failures": failures}


def _judge(judge: Any, examples: dict[int, QAExample], records: list[dict], batch_size: int) -> int:
  """Sets each record's LLM verdict (1.0 / 0.0, None when the judge failed); returns the failures."""
  from masksearch_jax.agent.llm_backends import LLMError
  from masksearch_jax.agent.synthesis import MalformedReplyError
  failures = 0
  answered = [r for r in records if r["prediction"] is not None]
  for r in records:
    if r["prediction"] is None:
      r["judge"] = 0.0
  for start in range(0, len(answered), batch_size):
    batch = answered[start:start + batch_size]
    verdicts = judge.judge_many([(examples[r["index"]].question, examples[r["index"]].answers, r["prediction"])
                                 for r in batch])
    for record, verdict in zip(batch, verdicts):
      if isinstance(verdict, (LLMError, MalformedReplyError)):
        failures += 1
        logger.warning("judge failed on %s: %s", record["id"], verdict)
      else:
        record["judge"] = float(bool(verdict))
  return failures


def _write_json(path: Path, value: Any) -> None:
  with atomic_text(path, overwrite=True) as f:
    json.dump(value, f, ensure_ascii=False, indent=2)
    f.write("\n")


def _check_run_directory(run_dir: Path, label: str, settings: dict) -> None:
  """Refuses to mix methods or seeds in one run directory (one run is one row of a table)."""
  if not run_dir.is_dir():
    return
  for other in sorted(run_dir.glob(f"*/{RESULT}")):
    if other.parent.name == label:
      continue
    theirs = json.loads(other.read_text(encoding="utf-8"))["settings"]
    for key in _RUN_KEYS:
      if theirs.get(key) != settings[key]:
        raise ConfigError(f"{run_dir} holds {key} {theirs.get(key)!r} (in {other.parent.name}), not "
                          f"{settings[key]!r}; evaluate each method and seed into its own directory")


@gin.configurable(denylist=["progress"])
def evaluate(checkpoint: str = gin.REQUIRED, benchmark: str = gin.REQUIRED, out_dir: str = gin.REQUIRED, *,
             path: str | None = None, method: str = "masksearch", mode: str = "agent", label: str | None = None,
             split: str = "test", limit: int = 0, types: Sequence[str] = (), seed: int = 0,
             index: str | None = None, url: str | None = None, rag_top_k: int = 3, rollout: Any = None,
             vocabulary: str | None = None, world: Any = None, judge: Any = None, judge_batch_size: int = 64,
             skip_bad: bool = False, overwrite: bool = False, progress: bool = True) -> EvalResult:
  """Runs the policy of `checkpoint` over a benchmark and writes its predictions, records and metrics.

  An evaluation that already finished (its `result.json` exists) is not redone unless
  `overwrite`; an interrupted one continues from its `trajectories.jsonl`.

  Args:
    checkpoint: The policy: a parameter checkpoint, a run's checkpoints directory (its newest
      step) or a run's model directory.
    benchmark: One of `benchmarks.BENCHMARKS` (a QA format name, or 'world').
    out_dir: The run directory (one method and seed; several benchmarks may share it).
    path: The benchmark's file (for 'world': a world directory, or None for `world`'s cached
      world).
    method: The method's name: the row of the report table (e.g. 'masksearch', 'prompt-only',
      'rag', 'sft').
    mode: 'agent' (multi-turn search) or 'rag' (top-`rag_top_k` passages for the question,
      then one answer turn; see `baselines`).
    label: The benchmark's column name and sub-directory (default: the examples' source, e.g.
      'hotpotqa', or the FlashRAG dataset's directory name; 'world-SPLIT' for the world).
    split: For 'world': which questions ('train', 'dev', 'test').
    limit: Evaluate the first `limit` questions only (0: all).
    types: Keep only questions of these types (metadata 'type'; empty: all).
    seed: Seed of the rollouts (irrelevant when decoding greedily, recorded for the report).
    index: A Tantivy index directory to search (default for 'world': the world's own index).
    url: A retrieval server (Search-R1's /retrieve) instead of `index`.
    rag_top_k: Passages given to the RAG baseline.
    rollout: A `rollout.RolloutConfig` (turn, length and sampling limits; None: its defaults).
    vocabulary: The policy's SentencePiece model file (None: the tasks' vocabulary from Gin,
      `seqio_tasks.VOCABULARY`).
    world: The `WorldConfig` of the 'world' benchmark without a path (None: `QAFiles.world`).
    judge: An LLM judge (e.g. `@synthesis.LLMJudge()`) for judge accuracy; None: no judge.
    judge_batch_size: Questions sent to the judge per `judge_many` call.
    skip_bad: Skip malformed benchmark records instead of failing.
    overwrite: Redo a finished evaluation (its directory is replaced).
    progress: Show a progress bar over the questions.

  Returns:
    The `EvalResult`.

  Raises:
    ConfigError: Unknown benchmark, mode or split, a missing retriever, or a run directory
      holding another method or seed.
    FileNotFoundError: A missing benchmark file, world directory, checkpoint or index.
  """
  from masksearch_jax.data.trajectories import TrajectoryWriter, read_trajectories
  RolloutConfig, RolloutTask = rollout_lib.RolloutConfig, rollout_lib.RolloutTask
  benchmarks.check_benchmark(benchmark)
  if mode not in baselines.MODES:
    raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(baselines.MODES)}")
  if not method or not str(method).strip():
    raise ConfigError("the method needs a name")
  if not Path(checkpoint).exists():
    raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
  if benchmark != benchmarks.WORLD and path is not None and not Path(path).exists():
    raise FileNotFoundError(f"benchmark file not found: {path}")
  if index is not None and url is not None:
    raise ConfigError("give an index or a retrieval url, not both")
  if benchmark == benchmarks.WORLD and path is None and world is None:
    world = seqio_tasks.QAFiles().world
  rollout = rollout if rollout is not None else RolloutConfig()
  if mode == "rag":
    rollout = dataclasses.replace(rollout, max_turns=1)
  examples = benchmarks.load_benchmark(benchmark, path, split=split, world_config=world, limit=limit,
                                       types=types, skip_bad=skip_bad)
  if not examples:
    raise ConfigError(f"benchmark {benchmark} ({path or split}) has no questions to evaluate")
  if label is None:
    label = f"world-{split}" if benchmark == benchmarks.WORLD else examples[0].source
  if index is None and url is None:
    if benchmark != benchmarks.WORLD:
      raise ConfigError(f"benchmark {benchmark} needs a retriever: an index directory or a retrieval url")
    from masksearch_jax.retrieval import tantivy_index
    index = str(tantivy_index.cached_index_dir(benchmarks.world_passages(path, world), corpus_format="jsonl"))
  elif index is not None and not Path(index).exists():
    raise FileNotFoundError(f"index not found: {index}")

  run_dir = Path(out_dir)
  directory = run_dir / label
  settings = {"method": str(method), "benchmark": benchmark, "label": label, "path": str(path) if path else None,
              "split": split if benchmark == benchmarks.WORLD else None, "checkpoint": str(checkpoint),
              "mode": mode, "seed": seed, "limit": limit, "types": list(types), "index": index, "url": url,
              "rag_top_k": rag_top_k if mode == "rag" else None, "rollout": dataclasses.asdict(rollout),
              "vocabulary": vocabulary, "judge": type(judge).__name__ if judge is not None else None,
              "num_questions": len(examples)}
  settings["rollout"]["prefill_buckets"] = list(settings["rollout"]["prefill_buckets"])
  _check_run_directory(run_dir, label, settings)
  if overwrite:
    remove(directory)
  if (directory / RESULT).is_file():
    done = json.loads((directory / RESULT).read_text(encoding="utf-8"))
    if done["settings"] != settings:
      raise ConfigError(f"{directory} holds an evaluation with other settings; pass overwrite to redo it")
    result = EvalResult(directory, done["settings"], done["metrics"], already_done=True)
    logger.info("%s already evaluated; pass overwrite to redo it", directory)
    return result
  if (directory / SETTINGS).is_file():
    before = json.loads((directory / SETTINGS).read_text(encoding="utf-8"))
    if before != settings:
      raise ConfigError(f"{directory} holds an interrupted evaluation with other settings; pass overwrite to "
                        f"start afresh")
  directory.mkdir(parents=True, exist_ok=True)
  _write_json(directory / SETTINGS, settings)

  # Episodes an interrupted run already finished.
  trajectories_path = directory / TRAJECTORIES
  finished: dict[int, Any] = {}
  if trajectories_path.exists():
    for t in read_trajectories(trajectories_path, skip_bad=True):
      i = t.meta.get("index")
      if isinstance(i, int) and 0 <= i < len(examples) and examples[i].id == t.id:
        finished[i] = t
  resumed = len(finished)
  todo = [i for i in range(len(examples)) if i not in finished]

  started = time.perf_counter()
  from masksearch_jax.retrieval import open_retriever
  if todo:
    params, config = span_scorer.load_checkpoint(checkpoint)
    vocab = _vocabulary(vocabulary)
    with open_retriever(index=index, url=url) as retriever:
      tasks = []
      if mode == "rag":
        hits = baselines.retrieve(retriever, [examples[i].question for i in todo], rag_top_k)
        for i, (found, error) in zip(todo, hits):
          e = examples[i]
          tasks.append(RolloutTask(e.id, "qa", baselines.rag_prompt(e.question, found, error), tuple(e.answers),
                                   meta={"index": i, "retrieval_errors": [error] if error else []}))
      else:
        tasks = [RolloutTask(examples[i].id, "qa", baselines.agent_prompt(examples[i].question),
                             tuple(examples[i].answers), meta={"index": i}) for i in todo]
      agent = rollout_lib.SearchAgent(config, params, vocab, retriever, rollout)
      bar = None
      if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(examples), initial=resumed, desc=f"eval {label} ({method})", unit=" questions")
      try:
        with TrajectoryWriter(trajectories_path) as writer:
          for trajectory in agent.run(tasks, seed=seed):
            writer.write(trajectory)
            finished[trajectory.meta["index"]] = trajectory
            if bar is not None:
              bar.update(1)
              bar.set_postfix(answered=sum(t.answer is not None for t in finished.values()), refresh=False)
      finally:
        if bar is not None:
          bar.close()

  records = [score_record(examples[i], finished[i], i, benchmark, rag=mode == "rag") for i in range(len(examples))]
  judge_failures = 0
  if judge is not None:
    judge_failures = _judge(judge, dict(enumerate(examples)), records, judge_batch_size)
  summary = summarize(records)
  summary["judge_failures"] = judge_failures
  with atomic_text(directory / RECORDS, overwrite=True) as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
  written = predictions.write_predictions([(examples[i], records[i]["prediction"]) for i in range(len(examples))],
                                          directory / PREDICTIONS, benchmark, overwrite=True)
  seconds = time.perf_counter() - started
  _write_json(directory / RESULT, {"settings": settings, "metrics": summary, "seconds": seconds,
                                   "predictions": {k: str(v.relative_to(directory)) for k, v in written.items()}})
  from masksearch_jax.eval import report
  report.write_report([run_dir], run_dir)
  return EvalResult(directory, settings, summary, seconds, resumed)


def _vocabulary(path: str | os.PathLike | None) -> Any:
  if path is not None:
    if not Path(path).is_file():
      raise FileNotFoundError(f"vocabulary not found: {path}")
    from masksearch_jax.data import vocabularies
    return vocabularies.sentencepiece_vocabulary(str(path))
  return seqio_tasks.VOCABULARY.vocabulary


def print_summary(result: EvalResult) -> None:
  """Prints the result's summary line to stdout."""
  print(result.summary_line(), file=sys.stdout, flush=True)
