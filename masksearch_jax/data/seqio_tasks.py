"""Building and registering the project's SeqIO tasks and mixtures.

`tasks/` calls the `register_*` functions here at import; this module holds
the logic. Everything a user may want to change per run (corpus, masking,
benchmark paths, mixture rates, vocabulary) is read from Gin when a dataset is
built, so Gin overrides change the data of already-registered tasks.

Every task has the same output features: `inputs` (the prompt; no loss) and
`targets` (what the model writes), tokenized with one vocabulary (SeqIO needs
one vocabulary per feature across a mixture). String features pass through for
evaluation and data making.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import gin
import seqio
import tensorflow as tf

from masksearch_jax.agent import protocol
from masksearch_jax.data import world_io
from masksearch_jax.data.ramp_source import RampDataSource
from masksearch_jax.data.world import WorldConfig

RAMP_MASK_COUNTS = (1, 2, 3, 4)
QA_BENCHMARKS = ("hotpotqa", "musique", "2wiki", "bamboogle", "fanoutqa", "freshqa", "flashrag", "searchr1")


# -- vocabulary --------------------------------------------------------------------


@gin.configurable(module="masksearch_jax.data.seqio_tasks")
def default_vocabulary(vocabulary: seqio.Vocabulary | None = None) -> seqio.Vocabulary:
  """The vocabulary of every task.

  Args:
    vocabulary: A `seqio.Vocabulary` (for example a SentencePiece model or a
      Hugging Face tokenizer.json); None trains (once, then caches) a
      SentencePiece model on the embedded world (`vocabularies.world_vocabulary`).
  """
  if vocabulary is not None:
    return vocabulary
  from masksearch_jax.data import vocabularies
  return vocabularies.world_vocabulary()


class GinVocabulary(seqio.Vocabulary):
  """Stands for `default_vocabulary()`, resolved from Gin at first use.

  Tasks are registered at import, before any Gin file is parsed; this proxy lets
  them share the vocabulary the run configures.
  """

  def __init__(self):
    self._resolved: seqio.Vocabulary | None = None
    super().__init__(extra_ids=0)

  @property
  def vocabulary(self) -> seqio.Vocabulary:
    if self._resolved is None:
      self._resolved = default_vocabulary()
    return self._resolved

  def reset(self) -> None:
    """Forgets the resolved vocabulary (after the Gin config changes)."""
    self._resolved = None

  @property
  def eos_id(self) -> int | None:
    return self.vocabulary.eos_id

  @property
  def unk_id(self) -> int | None:
    return self.vocabulary.unk_id

  @property
  def pad_id(self) -> int:
    return self.vocabulary.pad_id

  @property
  def _base_vocab_size(self) -> int:
    return self.vocabulary.vocab_size

  def _encode(self, s):
    return self.vocabulary.encode(s)

  def _decode(self, ids):
    return self.vocabulary.decode(ids)

  def _encode_tf(self, s):
    return self.vocabulary.encode_tf(s)

  def _decode_tf(self, ids):
    return self.vocabulary.decode_tf(ids)

  def __eq__(self, other) -> bool:
    if isinstance(other, GinVocabulary):
      return other.vocabulary == self.vocabulary
    return self.vocabulary == other

  def __hash__(self) -> int:
    return id(self)


VOCABULARY = GinVocabulary()


def output_features(targets_eos: bool = True) -> dict[str, seqio.Feature]:
  """The features of every task, so any of them can be mixed.

  `inputs` (the prompt, no EOS, optional), `targets` (EOS appended after trimming
  when `targets_eos`; trajectories place their own) in VOCABULARY, and
  `targets_loss_weights` (1 on the model's tokens, 0 on inserted observations).
  """
  return {
      "inputs": seqio.Feature(VOCABULARY, add_eos=False, required=False),
      "targets": seqio.Feature(VOCABULARY, add_eos=targets_eos),
      "targets_loss_weights": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False, required=False,
                                            dtype=tf.int32),
  }


@seqio.map_over_dataset
def add_unit_loss_weights(features):
  """Every target token is the model's own (tasks without observations)."""
  return {**features, "targets_loss_weights": tf.ones_like(features["targets"])}


_TEXT_PREPROCESSORS = (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim,
                       add_unit_loss_weights)


def _add_task(name: str, source: seqio.DataSource, metadata: str, preprocessors=_TEXT_PREPROCESSORS,
              targets_eos: bool = True, shuffle_buffer_size: int = 2048) -> seqio.Task:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  task = seqio.Task(name, source=source, output_features=output_features(targets_eos),
                    preprocessors=list(preprocessors), shuffle_buffer_size=shuffle_buffer_size)
  task.__doc__ = metadata
  return seqio.TaskRegistry.add_provider(name, task)


def _add_mixture(name: str, tasks: list[str]) -> seqio.Mixture:
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(
      name, [(t, functools.partial(_rate_of, name)) for t in tasks])


# -- RAMP ----------------------------------------------------------------------------


@gin.configurable(module="masksearch_jax.data.seqio_tasks")
def mixture_rate(mixture: str, task: str, rates: Mapping[str, Mapping[str, float]] | None = None) -> float:
  """The sampling rate of `task` in `mixture`.

  Args:
    mixture: The mixture's name, e.g. 'ramp_curriculum_stage3'.
    task: One of its tasks, e.g. 'ramp_mask2'.
    rates: {mixture: {task: rate}}; tasks not listed get rate 1.0 (uniform
      mixing). Example: `mixture_rate.rates = {'ramp_curriculum_stage2':
      {'ramp_mask1': 1.0, 'ramp_mask2': 3.0}}`. A rate of 0 leaves a task out.
  """
  return float((rates or {}).get(mixture, {}).get(task, 1.0))


def _rate_of(mixture: str, task: seqio.Task) -> float:
  return mixture_rate(mixture, task.name)


def register_ramp_tasks() -> None:
  """ramp_mask1..4 (exactly k masks), ramp_mixed (MaskSearch's mask-count rule), and mixtures
  ramp_curriculum_stage1..4 (tasks with at most k masks) and ramp_mixed_1to4 (all four)."""
  # The source tokenizes (in batches) and shuffles every epoch in full; the task only appends
  # EOS and weights, and a small buffer keeps epochs from blurring into each other.
  preprocessors = (seqio.preprocessors.append_eos_after_trim, add_unit_loss_weights)
  for k in RAMP_MASK_COUNTS:
    _add_task(f"ramp_mask{k}", RampDataSource(k, VOCABULARY), f"RAMP paragraphs with exactly {k} masked span(s).",
              preprocessors, shuffle_buffer_size=64)
  _add_task("ramp_mixed", RampDataSource(None, VOCABULARY), "RAMP paragraphs with MaskSearch's own mask-count rule.",
            preprocessors, shuffle_buffer_size=64)
  for k in RAMP_MASK_COUNTS:
    _add_mixture(f"ramp_curriculum_stage{k}", [f"ramp_mask{j}" for j in RAMP_MASK_COUNTS if j <= k])
  _add_mixture("ramp_mixed_1to4", [f"ramp_mask{j}" for j in RAMP_MASK_COUNTS])


@gin.configurable(module="masksearch_jax.data.seqio_tasks")
@dataclasses.dataclass(frozen=True)
class RampRecordFiles:
  """MaskSearch-format RAMP jsonl files (`{"query", "answer", "ext"}`) by split, for `ramp_records`.

  Attributes:
    paths: {split: path}, e.g. `{'train': '/data/masksearch_ramp.jsonl'}`.
    strict: Refuse records whose masks do not rebuild the answer exactly
      (False accepts the quirks of MaskSearch's released generator).
  """

  paths: Any = None
  strict: bool = False


_RECORD_SIGNATURE = {"inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
                     "masks": tf.TensorSpec([None], tf.string), "mask_num": tf.TensorSpec([], tf.int32)}


def _record_examples(split: str):
  from masksearch_jax.data import masking
  files = RampRecordFiles()
  if not files.paths or split not in files.paths:
    raise ValueError(f"task ramp_records: no {split!r} file; set RampRecordFiles.paths = "
                     f"{{'{split}': '/path/ramp.jsonl'}} in Gin")
  path = str(files.paths[split])
  if not Path(path).is_file():
    raise FileNotFoundError(f"task ramp_records: {path} does not exist (RampRecordFiles.paths)")

  def generate():
    for record in masking.read_ramp_jsonl(path, strict=files.strict):
      yield {"inputs": record["query"], "targets": record["answer"], "masks": list(record["ext"]["masks"]),
             "mask_num": int(record["ext"]["mask_num"])}
  return generate


def register_ramp_record_task() -> None:
  """ramp_records: RAMP examples a user brings as MaskSearch jsonl (RampRecordFiles)."""
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    return tf.data.Dataset.from_generator(_record_examples(split), output_signature=_RECORD_SIGNATURE)
  _add_task("ramp_records", seqio.FunctionDataSource(dataset_fn, splits=("train", "validation", "test"),
                                                     caching_permitted=False),
            "RAMP examples from MaskSearch-format jsonl files.")


# -- downstream QA -------------------------------------------------------------------


@gin.configurable(module="masksearch_jax.data.seqio_tasks")
@dataclasses.dataclass(frozen=True)
class QAFiles:
  """Where each benchmark's files are. Each value is a path (used for every split)
  or a {split: path} dict, for example `QAFiles.hotpotqa =
  {'validation': '/data/hotpot_dev_distractor_v1.json'}`.

  Attributes:
    hotpotqa, musique, twowiki, bamboogle, fanoutqa, freshqa, flashrag,
      searchr1: Files in each benchmark's own format (see README).
    world: The embedded world whose questions make the `qa_world` task.
  """

  hotpotqa: Any = None
  musique: Any = None
  twowiki: Any = None
  bamboogle: Any = None
  fanoutqa: Any = None
  freshqa: Any = None
  flashrag: Any = None
  searchr1: Any = None
  world: WorldConfig = WorldConfig(seed=0, size=4000)


_QA_SIGNATURE = {
    "inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
    "question": tf.TensorSpec([], tf.string), "answers": tf.TensorSpec([None], tf.string),
    "id": tf.TensorSpec([], tf.string),
}
# World question splits by SeqIO split name.
_WORLD_QA_SPLITS = {"train": "train", "validation": "dev", "test": "test"}


def _qa_example(example_id: str, question: str, answers: list[str]) -> dict[str, Any]:
  return {"inputs": protocol.qa_prompt(question), "targets": answers[0], "question": question,
          "answers": answers, "id": example_id}


def _qa_path(benchmark: str, split: str) -> str:
  field = "twowiki" if benchmark == "2wiki" else benchmark
  value = getattr(QAFiles(), field)
  if value is None:
    raise ValueError(f"task qa_{benchmark}: no file given; set QAFiles.{field} in Gin "
                     f"(a path, or a {{split: path}} dict)")
  if isinstance(value, Mapping):
    if split not in value:
      raise ValueError(f"task qa_{benchmark}: QAFiles.{field} has no {split!r} split (has {sorted(value)})")
    return str(value[split])
  return str(value)


def _benchmark_examples(benchmark: str, split: str):
  """The examples of one benchmark file; the file is checked before the generator starts."""
  from masksearch_jax.data import qa_formats
  path = _qa_path(benchmark, split)
  if not Path(path).exists():
    raise FileNotFoundError(f"task qa_{benchmark}: {path} does not exist (QAFiles in Gin)")

  def generate():
    for ex in qa_formats.read_qa(path, benchmark):
      yield _qa_example(ex.id, ex.question, list(ex.answers))
  return generate


def _world_examples(split: str):
  path = Path(world_io.cached_world_dir(QAFiles().world)) / "questions.jsonl"
  wanted = _WORLD_QA_SPLITS[split]

  def generate():
    with open(path, encoding="utf-8") as f:
      for line in f:
        q = json.loads(line)
        if q["split"] == wanted:
          yield _qa_example(q["id"], q["question"], [q["answer"], *q["aliases"]])
  return generate


def _qa_source(examples_fn) -> seqio.FunctionDataSource:
  """A source over `examples_fn(split)`, which checks its inputs and returns a generator function
  (so a missing file or setting is reported at once, not from inside tf.data)."""
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # Small files: the task's shuffle buffer shuffles them.
    return tf.data.Dataset.from_generator(examples_fn(split), output_signature=_QA_SIGNATURE)
  return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation", "test"), caching_permitted=False)


def register_qa_tasks() -> None:
  """qa_world (the embedded world's questions) and qa_<benchmark> for every benchmark format."""
  _add_task("qa_world", _qa_source(_world_examples), "Multi-hop questions of the embedded world.")
  for benchmark in QA_BENCHMARKS:
    _add_task(f"qa_{benchmark}", _qa_source(functools.partial(_benchmark_examples, benchmark)),
              f"Questions from a {benchmark} file (QAFiles in Gin).")


# -- agent trajectories (SFT) ---------------------------------------------------------------


@gin.configurable(module="masksearch_jax.data.seqio_tasks")
@dataclasses.dataclass(frozen=True)
class TrajectoryFiles:
  """Trajectory jsonl files (see README, "Agent trajectories") by split.

  Attributes:
    paths: {split: path or [paths]}, e.g. `{'train': ['/runs/r1/traj-0.jsonl'],
      'validation': '/runs/r1/traj-val.jsonl'}`.
    skip_bad: Skip malformed or torn lines (counted and logged) instead of failing.
  """

  paths: Any = None
  skip_bad: bool = False


_TRAJECTORY_SIGNATURE = {
    "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32),
    "targets_loss_weights": tf.TensorSpec([None], tf.int32), "id": tf.TensorSpec([], tf.string),
    "kind": tf.TensorSpec([], tf.string),
}


def _trajectory_paths(split: str) -> list[str]:
  paths = TrajectoryFiles().paths
  if not paths or split not in paths:
    raise ValueError(f"trajectory tasks: no {split!r} files; set TrajectoryFiles.paths = "
                     f"{{'{split}': ['/path/trajectories.jsonl']}} in Gin")
  listed = [paths[split]] if isinstance(paths[split], (str, Path)) else list(paths[split])
  missing = [p for p in listed if not Path(p).is_file()]
  if missing:
    raise FileNotFoundError(f"trajectory tasks: {missing[0]} does not exist (TrajectoryFiles.paths)")
  return [str(p) for p in listed]


def _trajectory_examples(kind: str | None, split: str, num_masks: int | None = None):
  from masksearch_jax.data import trajectories
  paths, skip_bad = _trajectory_paths(split), TrajectoryFiles().skip_bad

  def generate():
    vocabulary = VOCABULARY.vocabulary
    for path in paths:
      for trajectory in trajectories.read_trajectories(path, skip_bad=skip_bad):
        if kind is not None and trajectory.kind != kind:
          continue
        if num_masks is None or trajectories.ramp_mask_count(trajectory) == num_masks:
          features = trajectories.trajectory_features(trajectory, vocabulary)
          yield {**features, "id": trajectory.id, "kind": trajectory.kind}
  return generate


def register_trajectory_tasks() -> None:
  """trajectories (every kind), trajectories_ramp and trajectories_qa, from TrajectoryFiles; for SFT
  with MaskSearch's curriculum, trajectories_ramp_mask1..4 (RAMP with exactly k masks) and the mixtures
  trajectories_ramp_stage1..4 (at most k masks) and trajectories_ramp_1to4 (all four)."""
  tasks = [("trajectories", None, None), ("trajectories_ramp", "ramp", None), ("trajectories_qa", "qa", None)]
  tasks += [(f"trajectories_ramp_mask{k}", "ramp", k) for k in RAMP_MASK_COUNTS]
  for name, kind, num_masks in tasks:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, kind=kind,
                   num_masks=num_masks) -> tf.data.Dataset:
      del shuffle_files, seed  # The task's shuffle buffer shuffles.
      return tf.data.Dataset.from_generator(_trajectory_examples(kind, split, num_masks),
                                            output_signature=_TRAJECTORY_SIGNATURE)
    source = seqio.FunctionDataSource(dataset_fn, splits=("train", "validation", "test"), caching_permitted=False)
    what = f"{kind or 'every kind'}" + (f", {num_masks} mask(s)" if num_masks else "")
    _add_task(name, source, f"Agent trajectories ({what}) for SFT; tokenized with their loss weights.",
              preprocessors=(), targets_eos=False)
  for k in RAMP_MASK_COUNTS:
    _add_mixture(f"trajectories_ramp_stage{k}", [f"trajectories_ramp_mask{j}" for j in RAMP_MASK_COUNTS if j <= k])
  _add_mixture("trajectories_ramp_1to4", [f"trajectories_ramp_mask{j}" for j in RAMP_MASK_COUNTS])
