"""The policy as its own teacher: judged rollouts as SFT data, and MaskSearch's self-evolving distillation.

`synthesize_with_policy` runs the search agent (`rollout.SearchAgent`) on RAMP
examples or questions and keeps the trajectories the judge accepts: the answer's
token recall equals 1 (for RAMP, every masked span recovered and nothing else
changed), or an LLM judge's verdict when one is configured (a failed verdict falls
back to recall and is counted).

`self_evolve` is MaskSearch's self-evolving distillation as a Gin run: train a
student on the current trajectories; make it the teacher; let it write a new set
with its own rollouts through the judge's filter; repeat for N rounds. Each round
keeps its directory under `workdir/round-K/`: the student's run (`model/`, with
checkpoints, TensorBoard events and `config.gin`), the trajectories its rollouts
added (`trajectories.jsonl`), and `round.json` (written last) with the acceptance
rate. A rerun skips finished rounds and resumes an interrupted one (the trainer
resumes its checkpoints; the trajectory file is continued).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import gin

from masksearch_jax.agent import protocol
from masksearch_jax.agent.llm_backends import LLMError
from masksearch_jax.agent.offline_teacher import load_world, ramp_examples
from masksearch_jax.agent.rollout import RolloutConfig, RolloutTask, SearchAgent
from masksearch_jax.agent.synthesis import LLMJudge, MalformedReplyError, SynthesisTask, make_tasks
from masksearch_jax.data import seqio_tasks, world_io
from masksearch_jax.data.atomic_files import atomic_text
from masksearch_jax.data.ramp_source import RampCorpus
from masksearch_jax.data.trajectories import Trajectory, TrajectoryWriter, read_trajectories
from masksearch_jax.models.span_scorer import load_checkpoint
from masksearch_jax.retrieval import open_retriever, tantivy_index
from masksearch_jax.text_metrics import ramp_recall, token_recall
from masksearch_jax.training import trainer

logger = logging.getLogger(__name__)

_RAMP_SUFFIX = "\n\n" + protocol.RAMP_INSTRUCTION


def rollout_task(task: SynthesisTask) -> RolloutTask:
  """The rollout of a synthesis task (a RAMP row never sees its own passage)."""
  return RolloutTask(id=task.id, kind=task.kind, prompt=task.prompt, gold=task.gold, exclude_ids=task.source_ids,
                     meta=dict(task.meta))


def task_text(task: SynthesisTask) -> str:
  """The question, or the masked paragraph (without the fill-in instruction), as judges and rewards read it."""
  if task.kind == "ramp":
    if not task.text.endswith(_RAMP_SUFFIX):
      raise ValueError(f"RAMP task {task.id} does not hold its masked paragraph in 'text'")
    return task.text[:-len(_RAMP_SUFFIX)]
  return task.text


def recall_of(task: SynthesisTask, answer: str | None) -> float:
  """Token recall of an answer: over the masked spans for RAMP, against the gold and aliases for QA."""
  if answer is None:
    return 0.0
  if task.kind == "ramp":
    return ramp_recall(task_text(task), answer, task.meta.get("masks", ()))
  return token_recall(answer, task.gold)


@dataclasses.dataclass
class PolicySynthesisStats:
  """What a `synthesize_with_policy` run did."""

  kind: str
  path: str
  attempted: int = 0
  kept: int = 0
  skipped: int = 0  # Tasks whose trajectory the file already held.
  no_answer: int = 0
  judge_failures: int = 0  # LLM verdicts that failed and fell back to recall.
  searches: int = 0
  seconds: float = 0.0

  @property
  def acceptance_rate(self) -> float:
    return self.kept / self.attempted if self.attempted else 0.0

  def summary(self) -> str:
    return (f"kept {self.kept:,} of {self.attempted:,} ({self.acceptance_rate:.1%}), {self.no_answer:,} without an "
            f"answer, {self.skipped:,} already written, {self.judge_failures:,} judge failures, "
            f"{self.searches:,} searches, {self.seconds:.1f}s")


def synthesize_with_policy(kind: str, items: Iterable[Any], agent: SearchAgent, out_path: str | os.PathLike, *,
                           llm_judge: LLMJudge | None = None, seed: int = 0, progress: bool = True
                           ) -> PolicySynthesisStats:
  """Rolls out the policy on `items` and appends the accepted trajectories to `out_path`.

  Args:
    kind: "ramp" or "qa".
    items: RAMP examples, MaskSearch records, questions or `SynthesisTask`s (`synthesis.make_tasks`).
    agent: The policy as a search agent.
    out_path: Trajectory jsonl; an existing file is continued (tasks it holds are skipped).
    llm_judge: Judge answers with this LLM instead of token recall.
    seed: Seed of the rollouts' sampling.
    progress: Show a progress bar and print the summary line.
  """
  path = Path(out_path)
  existing = {t.id for t in read_trajectories(path, skip_bad=True)} if path.exists() else set()
  stats = PolicySynthesisStats(kind, str(path))
  tasks = {}
  for task in make_tasks(kind, items):
    if task.id in existing:
      stats.skipped += 1
    else:
      tasks[task.id] = task
  started = time.perf_counter()
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(tasks), desc=f"policy rollouts {kind}", unit=" tasks")
  finished: list[Trajectory] = []
  try:
    for trajectory in agent.run([rollout_task(t) for t in tasks.values()], seed=seed):
      finished.append(trajectory)
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  verdicts: dict[str, bool | None] = {}
  if llm_judge is not None:
    answered = [t for t in finished if t.answer is not None]
    results = llm_judge.judge_many([(tasks[t.id].text, t.gold, t.answer) for t in answered])
    for trajectory, verdict in zip(answered, results):
      if isinstance(verdict, (LLMError, MalformedReplyError)):
        stats.judge_failures += 1
        logger.warning("judge failed on %s (%s); using token recall", trajectory.id, verdict)
        verdicts[trajectory.id] = None
      else:
        verdicts[trajectory.id] = verdict
  with TrajectoryWriter(path) as writer:
    for trajectory in finished:
      task = tasks[trajectory.id]
      stats.attempted += 1
      stats.searches += len(trajectory.searches)
      if trajectory.answer is None:
        stats.no_answer += 1
        continue
      recall = recall_of(task, trajectory.answer)
      verdict = verdicts.get(trajectory.id)
      accepted = verdict if verdict is not None else recall == 1.0
      if accepted:
        stats.kept += 1
        judge = "llm" if verdict is not None else "recall"
        writer.write(dataclasses.replace(trajectory, reward=recall,
                                         meta=dict(trajectory.meta, judge=judge, teacher="policy")))
  stats.seconds = time.perf_counter() - started
  line = f"policy synthesis {kind} -> {path}: {stats.summary()}"
  logger.info("%s", line)
  if progress:
    print(line, file=sys.stderr)
  return stats


def _tasks_for_round(kind: str, split: str, num_masks: int | None, start: int, count: int, world: Any) -> list:
  """`count` tasks of the split from position `start` on (each round takes new ones)."""
  if kind == "ramp":
    items: Iterable[Any] = ramp_examples(split, num_masks)
  else:
    wanted = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}[split]
    items = [q for q in load_world(world).questions if q.split == wanted]
  return list(itertools.islice(items, start, start + count))


@gin.configurable(module="masksearch_jax.agent.self_evolve")
def self_evolve(*, workdir: str = gin.REQUIRED, initial_trajectories: Sequence[str] = gin.REQUIRED,
                rounds: int = 2, kind: str = "ramp", tasks_per_round: int = 64, split: str = "train",
                num_masks: int | None = 1, task_offset: int = 0, accumulate: bool = True,
                steps_per_round: int = 100, train_fn: Any = None, rollout: RolloutConfig | None = None,
                index: str | None = None, url: str | None = None, llm_judge: LLMJudge | None = None,
                world: Any = None, seed: int = 0, progress: bool = True) -> list[dict]:
  """Self-evolving distillation: N rounds of train the student, let it teach, keep what the judge accepts.

  Round k (0-based) trains a student on the trajectories so far (`initial_trajectories`, plus
  every earlier round's accepted rollouts when `accumulate`, else only the last round's),
  starting from round k-1's checkpoint (round 0 from `train_fn`'s own INITIAL_CHECKPOINT_PATH,
  if any); the student then rolls out `tasks_per_round` new tasks and its accepted
  trajectories become round k's data for round k+1.

  Args:
    workdir: Where the rounds go (SELF_EVOLVE_DIR).
    initial_trajectories: The first teacher's trajectory files (e.g. `masksearch synthesize`).
    rounds: Number of rounds (N).
    kind: "ramp" or "qa": what the student's rollouts solve.
    tasks_per_round: Tasks each student rolls out.
    split: The split the tasks come from.
    num_masks: RAMP masks per paragraph (None: MaskSearch's own rule).
    task_offset: Position of round 0's first task in the split; round k starts
      `k * tasks_per_round` later, so no round repeats another's tasks.
    accumulate: Train each round on all trajectories so far (else on the newest set only).
    steps_per_round: Training steps of each round's student.
    train_fn: The trainer (`@trainer.train`, configured by the run's Gin file); it is called
      with `model_dir`, `total_steps` and `initial_checkpoint_path` for each round.
    rollout: The student's rollout settings (`RolloutConfig`).
    index: The search index (default: the world's cached index); or `url` of a retrieval server.
    url: A retrieval server (Search-R1's /retrieve) instead of `index`.
    llm_judge: Judge with an LLM instead of token recall.
    world: The world whose questions QA rounds use (None: Gin's `QAFiles.world`).
    seed: Seed of the rollouts (round k uses seed + k).
    progress: Progress bars and summary lines.

  Returns:
    One dict per round: its data, checkpoint, acceptance rate and counts (also in round.json).
  """
  if train_fn is None:
    train_fn = gin.get_configurable(trainer.train)
  if rounds < 1 or tasks_per_round < 1 or steps_per_round < 1:
    raise ValueError(f"rounds, tasks_per_round and steps_per_round must be positive, got {rounds}, "
                     f"{tasks_per_round}, {steps_per_round}")
  missing = [p for p in initial_trajectories if not Path(p).is_file()]
  if missing:
    raise FileNotFoundError(f"self_evolve.initial_trajectories: {missing[0]} does not exist")
  root = Path(workdir).absolute()
  root.mkdir(parents=True, exist_ok=True)
  if url is None and index is None:
    index = world_index(kind, world)
  history: list[dict] = []
  data_sets = [[str(Path(p).absolute()) for p in initial_trajectories]]
  previous_checkpoint: str | None = None
  with open_retriever(index=index, url=url) as retriever:
    for k in range(rounds):
      round_dir = root / f"round-{k}"
      record_path = round_dir / "round.json"
      if record_path.is_file():  # Finished before: reuse it.
        record = json.loads(record_path.read_text())
        history.append(record)
        data_sets.append([record["trajectories"]])
        previous_checkpoint = record["checkpoint"]
        continue
      round_dir.mkdir(parents=True, exist_ok=True)
      started = time.perf_counter()
      files = [p for data in data_sets for p in data] if accumulate else data_sets[-1]
      with gin.unlock_config():
        gin.bind_parameter("masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths", {"train": files})
      kwargs = dict(model_dir=str(round_dir / "model"), total_steps=steps_per_round)
      if previous_checkpoint is not None:
        kwargs["initial_checkpoint_path"] = previous_checkpoint
      summary = train_fn(**kwargs)
      checkpoint = str(round_dir / "model" / "checkpoints")
      params, config = load_checkpoint(checkpoint)
      agent = SearchAgent(config, params, seqio_tasks.VOCABULARY.vocabulary, retriever, rollout or RolloutConfig())
      items = _tasks_for_round(kind, split, num_masks, task_offset + k * tasks_per_round, tasks_per_round, world)
      out = round_dir / "trajectories.jsonl"
      stats = synthesize_with_policy(kind, items, agent, out, llm_judge=llm_judge, seed=seed + k, progress=progress)
      out.touch()  # An empty set is still this round's (empty) data.
      record = {"round": k, "trained_on": files, "checkpoint": checkpoint, "trajectories": str(out),
                "attempted": stats.attempted, "kept": stats.kept, "acceptance_rate": stats.acceptance_rate,
                "no_answer": stats.no_answer, "judge_failures": stats.judge_failures,
                "final_loss": getattr(summary, "final_loss", None), "seconds": time.perf_counter() - started}
      _write_json(record_path, record)
      history.append(record)
      data_sets.append([str(out)])
      previous_checkpoint = checkpoint
      if progress:
        print(f"self-evolve round {k}: student trained {steps_per_round} steps on {len(files)} file(s); "
              f"acceptance {stats.acceptance_rate:.1%} ({stats.kept}/{stats.attempted}) -> {out}", file=sys.stderr)
  _write_json(root / "summary.json", history)
  return history


def _write_json(path: Path, value: Any) -> None:
  with atomic_text(path, overwrite=True) as f:
    f.write(json.dumps(value, indent=2) + "\n")


def world_index(kind: str, world: Any = None) -> str:
  """The cached index of the world the tasks come from."""
  if world is None:
    world = RampCorpus().world if kind == "ramp" else seqio_tasks.QAFiles().world
  world_dir = world if isinstance(world, (str, os.PathLike)) else world_io.cached_world_dir(world)
  return str(tantivy_index.cached_index_dir(Path(world_dir) / "passages.jsonl", corpus_format="jsonl"))
