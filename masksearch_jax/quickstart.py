"""The main job on the embedded world: what `make quickstart` runs.

MaskSearch end to end, one stage after another, every artifact under `workdir`:

  world         the fictional encyclopedia (`world/`)
  index         its Tantivy index (`index/`)
  ramp_data     RAMP examples with 1 to 4 masks as MaskSearch's jsonl records (`ramp/`)
  trajectories  the offline teacher's judged trajectories for those RAMP examples and for the
                training questions (`trajectories/`), or an LLM teacher's (`teacher='llm'`)
  vocabulary    a SentencePiece model trained on the corpus, the questions and what the teacher
                wrote (`vocabulary/spm.model`); trajectories are text, so they come first
  sft           SFT of the policy on the RAMP trajectories, curriculum 1 -> 4 masks (`sft/`)
  dapo          a short DAPO stage on RAMP from the SFT checkpoint (`dapo/`)
  qa_sft        downstream SFT on the question trajectories (`qa_sft/`)
  eval          the agent, and the plain-RAG baseline, on held-out questions about entities
                never seen in training (`eval/`)
  report        the table (markdown, JSON, PNG chart) of the evaluations (`report/`)

Each finished stage writes `stages/NAME.json` (what it made, and a key of its settings
and of every stage before it). A rerun reuses a finished stage whose key still matches,
resumes one that was interrupted (the trainers restore their checkpoints, trajectory and
evaluation files are continued), and redoes a stage whose settings changed (its
directory is cleared first), along with every stage after it. `rebuild=True` redoes
everything; `skip=('dapo',)` leaves stages out (later ones start from the newest
checkpoint made before them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gin

from masksearch_jax.data import world_io
from masksearch_jax.data.atomic_files import atomic_text
from masksearch_jax.data.world import WorldConfig
from masksearch_jax.errors import ConfigError

STAGES = ("world", "index", "ramp_data", "trajectories", "vocabulary", "sft", "dapo", "qa_sft", "eval", "report")
MASK_COUNTS = (1, 2, 3, 4)
EVAL_METHODS = ("masksearch", "rag")


def run(*, workdir: str = "artifacts/quickstart", world: WorldConfig = WorldConfig(seed=0, size=4000),
        model: Any = None, data_dir: str | None = None, corpus: str | None = None, corpus_format: str = "auto",
        vocabulary: str | None = None, teacher_words: int = 2000, rebuild: bool = False, skip: Sequence[str] = (),
        teacher: str = "offline", ramp_examples: int = 600, qa_questions: int = 0,
        feature_lengths: Mapping[str, int] | None = None, batch_size: int = 8, pack: bool = True,
        length_buckets: Sequence[tuple[int, int]] = (), sft_steps: int = 400,
        curriculum: bool = True, sft_learning_rate: float = 3e-3, initial_checkpoint: str | None = None,
        dapo_steps: int = 4, qa_steps: int = 200, qa_learning_rate: float = 1e-3, qa_train_types: Sequence[str] = (),
        eval_questions: int = 200, eval_methods: Sequence[str] = EVAL_METHODS,
        method_names: Mapping[str, str] | None = None, eval_sets: Sequence[tuple[str, Sequence[str]]] = (),
        eval_rollout: Any = None, checkpoint_period: int = 50, seed: int = 0, data_seed: int | None = None,
        progress: bool = True) -> dict:
  """Runs MaskSearch's stages (see the module docstring) and returns a summary of every artifact.

  Args:
    workdir: Directory for the run's artifacts (WORKDIR).
    world: The embedded world (WORLD_SEED, WORLD_SIZE): its passages are the corpus, its
      training questions the downstream data and its test questions (entities never trained
      on) the evaluation.
    model: The policy's shape (MODEL, from a gin/models/ file).
    data_dir: Where world, index, vocabulary, RAMP data and trajectories go (default:
      `workdir`), so several runs can share them.
    corpus: A corpus of the user's own (any format `corpus_readers` reads) to index and to
      make RAMP data from, instead of the world's passages. Questions still come from the world.
    corpus_format: The format of `corpus` ('auto' detects it).
    vocabulary: A SentencePiece model to use instead of training one on the corpus.
    teacher_words: Trajectories per teacher file (each RAMP mask count, the questions of
      `qa_train_types`) whose model-written text joins the vocabulary's training text, so the
      words the policy writes are whole pieces rather than characters and name syllables;
      0 trains on the corpus and questions only.
    rebuild: Redo every stage even if it finished before.
    skip: Stages to leave out (names in `STAGES`).
    teacher: 'offline' (the embedded world's teacher, no endpoint needed) or 'llm' (MaskSearch's
      planner, rewriter, observer and judge over the endpoint bound to
      `synthesis.teacher_backends.backend` in Gin).
    ramp_examples: RAMP examples per mask count (1..4) given to the teacher.
    qa_questions: Training questions given to the teacher (0: all).
    feature_lengths: Token lengths of the SFT rows ({'inputs': ..., 'targets': ...}); longer
      trajectories are cut.
    batch_size: SFT batch size (rows).
    pack: Pack several trajectories into each row (segment ids keep them apart). Trajectories are
      about half a row long on average, so unpacked rows are about half padding.
    length_buckets: Batch trajectories of similar length in shorter rows, as [(row_length, rows),
      ...] (`DatasetConfig.length_buckets`); with `pack=False` this saves most of the padding and
      the attention over it. Empty: every row full length.
    sft_steps: RAMP SFT steps, split evenly over the curriculum's four stages.
    curriculum: Train on 1 mask, then at most 2, 3, 4 (MaskSearch's curriculum); False mixes
      all four from the start (same steps).
    sft_learning_rate: Peak learning rate of RAMP SFT (warm-up, then cosine decay).
    initial_checkpoint: Start RAMP SFT (or whatever stage trains first) from this checkpoint,
      e.g. an imported Hugging Face model; None starts from random weights.
    dapo_steps: DAPO optimizer steps; its other settings are `dapo.train_dapo`'s Gin bindings.
    qa_steps: Downstream SFT steps on the question trajectories.
    qa_learning_rate: Peak learning rate of downstream SFT.
    qa_train_types: Question types kept in the downstream training data (empty: all), so a type
      left out can be evaluated as out-of-domain.
    eval_questions: Held-out questions evaluated per evaluation set (the first N of the test
      split; 0: all).
    eval_methods: 'masksearch' (the trained agent) and/or 'rag' (the same policy answering
      from the top passages of one search), the rows of the report. With no training stage and
      no `initial_checkpoint`, 'masksearch' evaluates the untrained initial weights (the
      prompt-only baseline of a model trained from scratch).
    method_names: The report's row name of each method (default: the method's own name).
    eval_sets: (label, question types) pairs evaluated as separate columns, e.g.
      `[('in-domain', ['compositional', 'inference', 'comparison']), ('held-out type',
      ['bridge_comparison'])]`; empty: one column of every type.
    eval_rollout: The evaluation's `RolloutConfig` (greedy by default).
    checkpoint_period: Training checkpoints every this many steps (an interrupted run resumes
      from the last one).
    seed: Seed of initialisation, training order and rollouts (and of the data unless `data_seed`).
    data_seed: Seed of the RAMP data, the teacher and the vocabulary, so runs with different
      `seed`s can share one `data_dir` (None: `seed`).
    progress: Progress bars and the final summary.

  Returns:
    A summary dict (also written to `workdir/summary.json`).
  """
  unknown = [s for s in skip if s not in STAGES]
  if unknown:
    raise ConfigError(f"quickstart.run.skip: unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
  if teacher not in ("offline", "llm"):
    raise ConfigError(f"quickstart.run.teacher must be 'offline' or 'llm', got {teacher!r}")
  bad_methods = [m for m in eval_methods if m not in EVAL_METHODS]
  if bad_methods:
    raise ConfigError(f"quickstart.run.eval_methods: unknown method {bad_methods[0]!r}; choose from "
                      f"{', '.join(EVAL_METHODS)}")
  data_seed = seed if data_seed is None else data_seed
  names = dict(method_names or {})
  started = time.perf_counter()
  root = Path(workdir).absolute()
  data = Path(data_dir).absolute() if data_dir else root
  job = _Job(root, data, rebuild=rebuild, skip=set(skip))
  lengths = dict(feature_lengths or {"inputs": 320, "targets": 1664})
  made: dict[str, Any] = {}

  def world_stage(directory: Path) -> dict:
    if world_io.is_complete(directory) and world_io.load_config(directory) == world and not rebuild:
      print(f"      reusing the world in {directory}")
    else:
      print(f"      generating seed={world.seed} size={world.size}")
      world_io.generate_and_write(world, directory, overwrite=True, progress=progress)
    loaded = world_io.load_world(directory)
    return {"dir": str(directory), "passages": len(loaded.passages), "entities": len(loaded.entities),
            "facts": len(loaded.facts), "questions": len(loaded.questions)}
  made["world"] = job.stage("world", {"world": dataclasses.asdict(world)}, world_stage, shared=True)
  _bind_world(world, corpus, corpus_format)

  def index_stage(directory: Path) -> dict:
    from masksearch_jax.data import corpus_readers
    from masksearch_jax.retrieval import tantivy_index
    source = corpus or str(Path(job.need(made, "world", "index")["dir"]) / "passages.jsonl")
    fmt = corpus_format if corpus else "jsonl"
    built = tantivy_index.build_index(corpus_readers.read_corpus(source, fmt), directory, overwrite=True,
                                      progress=progress)
    return {"dir": str(directory), "corpus": source, "passages": built.num_passages}
  made["index"] = job.stage("index", {"corpus": corpus}, index_stage, shared=True)

  def ramp_stage(directory: Path) -> dict:
    from masksearch_jax.data import masking
    from masksearch_jax.data.ramp_source import RampDataSource
    files = {}
    for k in MASK_COUNTS:
      records = RampDataSource(k).records("train", source=corpus or "world")
      path = directory / f"mask{k}.jsonl"
      count = masking.write_ramp_jsonl(itertools.islice(records, ramp_examples), path, overwrite=True)
      print(f"      {count:,} RAMP records with {k} mask(s) -> {path}")
      files[f"mask{k}"] = str(path)
    return {"files": files}
  made["ramp_data"] = job.stage("ramp_data", {"ramp_examples": ramp_examples, "seed": data_seed}, ramp_stage,
                                shared=True)

  def trajectory_stage(directory: Path) -> dict:
    index = job.need(made, "index", "trajectories")["dir"]
    world_dir = job.need(made, "world", "trajectories")["dir"]
    return _synthesize(teacher, directory, index, world_dir, ramp_examples, qa_questions, data_seed, progress)
  made["trajectories"] = job.stage(
      "trajectories", {"teacher": teacher, "ramp_examples": ramp_examples, "qa_questions": qa_questions,
                       "seed": data_seed}, trajectory_stage, shared=True)

  def vocabulary_stage(directory: Path) -> dict:
    from masksearch_jax.data import corpus_readers, vocabularies
    if vocabulary is not None:
      return {"path": str(Path(vocabulary).absolute())}
    if corpus is not None:
      texts = itertools.chain(vocabularies.prompt_texts(),
                              vocabularies.passage_training_texts(corpus_readers.read_corpus(corpus, corpus_format)))
    else:
      texts = vocabularies.world_training_texts(world_io.load_world(job.need(made, "world", "vocabulary")["dir"]))
    if teacher_words and made.get("trajectories"):
      files = made["trajectories"]["ramp"] + [made["trajectories"]["qa"]]
      texts = itertools.chain(texts, vocabularies.model_written_texts(files, per_file=teacher_words,
                                                                      question_types=qa_train_types))
    path = vocabularies.train_sentencepiece(texts, directory / "spm.model", seed=data_seed, overwrite=True)
    return {"path": str(path)}
  made["vocabulary"] = job.stage(
      "vocabulary", {"vocabulary": vocabulary, "seed": data_seed, "teacher_words": teacher_words,
                     "types": list(qa_train_types)}, vocabulary_stage, shared=True)
  vocab_path = _bind_vocabulary(made.get("vocabulary"), vocabulary, model)

  checkpoint = str(Path(initial_checkpoint).absolute()) if initial_checkpoint else None
  buckets = [tuple(b) for b in length_buckets]
  training = {"model": repr(model), "lengths": lengths, "batch_size": batch_size, "pack": pack,
              "length_buckets": buckets, "seed": seed, "initial_checkpoint": checkpoint}

  def sft_stage(directory: Path) -> dict:
    files = job.need(made, "trajectories", "sft")["ramp"]
    stages = [f"trajectories_ramp_stage{k}" for k in MASK_COUNTS] if curriculum else ["trajectories_ramp_1to4"]
    plan = _even_split(stages, sft_steps)
    return _train(model, directory, files, plan, lengths, batch_size, pack, buckets, sft_learning_rate, checkpoint,
                  checkpoint_period, seed, progress)
  made["sft"] = job.stage("sft", {**training, "steps": sft_steps, "curriculum": curriculum,
                                  "learning_rate": sft_learning_rate}, sft_stage)
  checkpoint = made["sft"]["checkpoint"] if made.get("sft") else checkpoint

  def dapo_stage(directory: Path) -> dict:
    from masksearch_jax.rl import dapo
    summary = configured(dapo.train_dapo)(
        model=model, model_dir=str(directory), total_steps=dapo_steps, kind="ramp",
        initial_checkpoint_path=job.need_checkpoint(checkpoint, "dapo"), index=made["index"]["dir"],
        random_seed=seed, progress=progress)
    return {"checkpoint": str(directory / "checkpoints"), "final_reward": summary.final_reward,
            "reward_history": list(summary.reward_history), "seconds": summary.seconds}
  made["dapo"] = job.stage("dapo", {"steps": dapo_steps, "dapo": _gin_bindings("train_dapo"),
                                    "from": checkpoint}, dapo_stage)
  checkpoint = made["dapo"]["checkpoint"] if made.get("dapo") else checkpoint

  def qa_stage(directory: Path) -> dict:
    files = [_of_types(job.need(made, "trajectories", "qa_sft")["qa"], qa_train_types, directory)]
    return _train(model, directory, files, [("trajectories_qa", qa_steps)], lengths, batch_size, pack, buckets,
                  qa_learning_rate, checkpoint, checkpoint_period, seed, progress)
  made["qa_sft"] = job.stage("qa_sft", {**training, "steps": qa_steps, "learning_rate": qa_learning_rate,
                                        "types": list(qa_train_types), "from": checkpoint}, qa_stage)
  checkpoint = made["qa_sft"]["checkpoint"] if made.get("qa_sft") else checkpoint

  def eval_stage(directory: Path) -> dict:
    from masksearch_jax.eval import runner
    policy = checkpoint or _untrained(model, directory / "untrained", seed, "agent" in modes)
    results = {}
    for method in eval_methods:
      for label, types in eval_sets or [(None, ())]:
        result = runner.evaluate(
            checkpoint=job.need_checkpoint(policy, "eval"), benchmark="world", out_dir=str(directory / method),
            path=job.need(made, "world", "eval")["dir"], method=names.get(method, method),
            mode="rag" if method == "rag" else "agent",
            label=label, split="test", limit=eval_questions, types=list(types), seed=seed,
            index=job.need(made, "index", "eval")["dir"], rollout=eval_rollout, vocabulary=vocab_path,
            progress=progress)
        if progress:
          print("      " + result.summary_line())
        results[f"{method}/{result.settings['label']}"] = {
            "dir": str(directory / method), "recall": result.metrics["recall"], "em": result.metrics["em"],
            "f1": result.metrics["f1"]}
    return {"checkpoint": policy, "runs": results}
  modes = {"rag" if m == "rag" else "agent" for m in eval_methods}
  made["eval"] = job.stage("eval", {"methods": list(eval_methods), "names": names, "sets": list(eval_sets),
                                    "questions": eval_questions, "rollout": repr(eval_rollout), "from": checkpoint},
                           eval_stage)

  def report_stage(directory: Path) -> dict:
    from masksearch_jax.eval import report
    runs = sorted({r["dir"] for r in job.need(made, "eval", "report")["runs"].values()})
    paths = report.write_report(runs, directory)
    return {key: str(value) for key, value in paths.items()}
  made["report"] = job.stage("report", {}, report_stage)

  summary = {"workdir": str(root), "data_dir": str(data), "stages": made, "checkpoint": checkpoint,
             "seconds": round(time.perf_counter() - started, 1)}
  with atomic_text(root / "summary.json", overwrite=True) as f:
    f.write(json.dumps(summary, indent=2, default=str) + "\n")
  if progress:
    _print_summary(summary)
  return summary


class _Job:
  """Runs, reuses, resumes or redoes the stages, and keeps their records under `stages/`."""

  def __init__(self, root: Path, data: Path, *, rebuild: bool, skip: set[str]):
    self.root, self.data, self.rebuild, self.skip = root, data, rebuild, skip
    self.key = ""  # The chained key of the settings of every stage so far.
    self.position = 0
    self.ran = False

  def stage(self, name: str, settings: Mapping[str, Any], fn: Callable[[Path], dict], *,
            shared: bool = False) -> dict | None:
    self.position += 1
    label = f"[{self.position}/{len(STAGES)}] {name}:"
    if name in self.skip:
      print(f"{label} skipped")
      return None
    base = self.data if shared else self.root
    directory = base / _DIRECTORIES.get(name, name)
    records = base / "stages"
    self.key = hashlib.sha256((self.key + json.dumps(settings, sort_keys=True, default=str)).encode()
                              ).hexdigest()[:16]
    done = _read_json(records / f"{name}.json")
    if done is not None and done["key"] == self.key and not self.rebuild and not self.ran:
      print(f"{label} reusing {directory}")
      return done["outputs"]
    begun = _read_json(records / f"{name}.started.json")
    resumable = begun is not None and begun["key"] == self.key and done is None and not (self.rebuild or self.ran)
    self.ran = True  # Every later stage is redone: it would read what this one makes now.
    if resumable:
      print(f"{label} resuming {directory}")
    else:
      if directory.exists() and name != "world":  # The world stage checks its own directory.
        shutil.rmtree(directory)
      print(f"{label} running")
    (records / f"{name}.json").unlink(missing_ok=True)
    _write_json(records / f"{name}.started.json", {"key": self.key})
    started = time.perf_counter()
    outputs = fn(directory)
    outputs = dict(outputs, seconds=round(time.perf_counter() - started, 1))
    _write_json(records / f"{name}.json", {"key": self.key, "outputs": outputs})
    print(f"{label} done in {outputs['seconds']}s")
    return outputs

  def need(self, made: Mapping[str, Any], stage: str, by: str) -> dict:
    if made.get(stage) is None:
      raise ConfigError(f"quickstart stage {by!r} needs stage {stage!r}, which was skipped")
    return made[stage]

  def need_checkpoint(self, checkpoint: str | None, by: str) -> str:
    if checkpoint is None:
      raise ConfigError(f"quickstart stage {by!r} needs a policy: no training stage ran and "
                        "quickstart.run.initial_checkpoint is not set")
    return checkpoint


_DIRECTORIES = {"ramp_data": "ramp"}


def _read_json(path: Path) -> dict | None:
  return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_text(path, overwrite=True) as f:
    f.write(json.dumps(value, indent=2, default=str) + "\n")


def _gin_bindings(name: str) -> str:
  """The operative Gin bindings of a configurable, for a stage's key."""
  return "\n".join(line for line in gin.config_str().splitlines() if name in line)


def _bind_world(world: WorldConfig, corpus: str | None, corpus_format: str) -> None:
  """Points the RAMP and QA tasks (and their cached world and index) at this job's world or corpus."""
  with gin.unlock_config():
    gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.world", world)
    gin.bind_parameter("masksearch_jax.data.seqio_tasks.QAFiles.world", world)
    if corpus is not None:
      gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.path", corpus)
      gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.format", corpus_format)


def _bind_vocabulary(record: dict | None, vocabulary: str | None, model: Any) -> str | None:
  """Makes the job's SentencePiece model the vocabulary of every task; returns its path."""
  from masksearch_jax.data import seqio_tasks, vocabularies
  path = record["path"] if record else vocabulary
  if path is None:
    return None
  vocab = vocabularies.sentencepiece_vocabulary(path)
  if model is not None and vocab.vocab_size > model.vocab_size:
    raise ConfigError(f"the vocabulary {path} has {vocab.vocab_size} pieces but the model's vocab_size is "
                      f"{model.vocab_size}")
  with gin.unlock_config():
    gin.bind_parameter("masksearch_jax.data.seqio_tasks.default_vocabulary.vocabulary", vocab)
  seqio_tasks.VOCABULARY.reset()
  return path


def _synthesize(teacher: str, directory: Path, index: str, world_dir: str, ramp_examples: int, qa_questions: int,
                seed: int, progress: bool) -> dict:
  """The teacher's trajectories: one file per RAMP mask count, and one for the training questions."""
  directory.mkdir(parents=True, exist_ok=True)
  ramp = [directory / f"ramp-mask{k}.jsonl" for k in MASK_COUNTS]
  qa = directory / "qa-train.jsonl"
  kept: dict[str, int] = {}
  if teacher == "offline":
    from masksearch_jax.agent import offline_teacher
    for k, path in zip(MASK_COUNTS, ramp):
      summary = offline_teacher.synthesize_to_file("ramp", path, index=index, split="train", num_masks=k,
                                                   limit=ramp_examples, seed=seed, progress=progress)
      kept[path.name] = summary.kept + summary.skipped
    summary = offline_teacher.synthesize_to_file("qa", qa, world=world_dir, index=index, split="train",
                                                 limit=qa_questions, seed=seed, progress=progress)
    kept[qa.name] = summary.kept + summary.skipped
  else:
    from masksearch_jax.agent import synthesis
    from masksearch_jax.agent.offline_teacher import ramp_examples as examples_of
    from masksearch_jax.retrieval import open_retriever
    backend, judge_backend = synthesis.teacher_backends()
    with open_retriever(index=index) as retriever:
      for k, path in zip(MASK_COUNTS, ramp):
        stats = synthesis.synthesize_with_llm("ramp", itertools.islice(examples_of("train", k), ramp_examples),
                                              retriever, backend, str(path), judge_backend=judge_backend,
                                              progress=progress)
        kept[path.name] = stats.kept
      questions = [q for q in world_io.load_world(world_dir).questions if q.split == "train"]
      stats = synthesis.synthesize_with_llm("qa", questions[:qa_questions or None], retriever, backend, str(qa),
                                            judge_backend=judge_backend, progress=progress)
      kept[qa.name] = stats.kept
  empty = [name for name, count in kept.items() if count == 0]
  if empty:
    raise RuntimeError(f"the {teacher} teacher kept no trajectory for {empty[0]}; nothing to train on")
  return {"ramp": [str(p) for p in ramp], "qa": str(qa), "kept": kept}


def _of_types(path: str, types: Sequence[str], directory: Path) -> str:
  """`path`, or a copy in `directory` holding only the question trajectories of `types`."""
  if not types:
    return path
  from masksearch_jax.data.trajectories import TrajectoryWriter, read_trajectories
  out = directory / "train-types.jsonl"
  directory.mkdir(parents=True, exist_ok=True)
  out.unlink(missing_ok=True)
  kept = 0
  with TrajectoryWriter(out) as writer:
    for trajectory in read_trajectories(path):
      if trajectory.meta.get("question_type") in types:
        writer.write(trajectory)
        kept += 1
  if not kept:
    raise ConfigError(f"quickstart.run.qa_train_types {list(types)}: no trajectory of those types in {path}")
  return str(out)


def _untrained(model: Any, directory: Path, seed: int, needed: bool) -> str | None:
  """The initial weights of `model` as a parameter checkpoint (the untrained, prompt-only policy)."""
  if not needed or model is None:
    return None
  import jax
  import jax.numpy as jnp
  from flax import linen as nn

  from masksearch_jax.models.transformer import Decoder
  from masksearch_jax.training import checkpoints
  if not (directory / "model_config.json").exists():
    if directory.exists():  # An interrupted write.
      shutil.rmtree(directory)
    params = nn.unbox(Decoder(model).init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])
    checkpoints.save_params(params, directory, model)
  return str(directory)


def configured(fn: Callable) -> Callable:
  """`fn` with its Gin bindings when a Gin file registered it (dynamic registration), else `fn` itself."""
  try:
    return gin.get_configurable(fn)
  except ValueError:  # Not in the registry: nothing is bound to it.
    return fn


def _even_split(names: Sequence[str], steps: int) -> list[tuple[str, int]]:
  if steps < len(names):
    raise ConfigError(f"{steps} steps cannot be split over {len(names)} curriculum stages")
  share, extra = divmod(steps, len(names))
  return [(name, share + (i < extra)) for i, name in enumerate(names)]


def _train(model: Any, directory: Path, files: Sequence[str], plan: Sequence[tuple[str, int]],
           lengths: Mapping[str, int], batch_size: int, pack: bool, buckets: Sequence[tuple[int, int]],
           learning_rate: float, initial_checkpoint: str | None, checkpoint_period: int, seed: int,
           progress: bool) -> dict:
  """SFT on trajectory files with `trainer.train` (its other settings from Gin)."""
  from masksearch_jax.data.input_pipeline import DatasetConfig
  from masksearch_jax.training import checkpoints, trainer
  if model is None:
    raise ConfigError("quickstart.run.model is not set (MODEL, e.g. include 'models/tiny.gin')")
  with gin.unlock_config():
    gin.bind_parameter("masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths", {"train": list(files)})
  total = sum(steps for _, steps in plan)
  warmup = max(1, min(20, total // 10))
  summary = configured(trainer.train)(
      model=model, model_dir=str(directory), total_steps=total,
      train_dataset_cfg=DatasetConfig(plan[0][0], dict(lengths), "train", batch_size, shuffle=True, seed=seed,
                                      pack=pack, length_buckets=tuple(buckets)),
      curriculum=list(plan) if len(plan) > 1 else None,
      learning_rate=trainer.warmup_cosine_schedule(learning_rate, warmup, total),
      checkpoint_cfg=checkpoints.CheckpointConfig(save=checkpoints.SaveCheckpointConfig(period=checkpoint_period)),
      initial_checkpoint_path=initial_checkpoint, random_seed=seed, progress=progress)
  return {"checkpoint": str(directory / "checkpoints"), "final_loss": summary.final_loss,
          "steps": summary.final_step, "seconds": summary.seconds}


def _print_summary(summary: dict) -> None:
  made = summary["stages"]
  print(f"\nquickstart done in {summary['seconds']}s")
  if made.get("world"):
    w = made["world"]
    print(f"  world:        {w['dir']} ({w['passages']:,} passages, {w['questions']:,} questions)")
  if made.get("index"):
    print(f"  index:        {made['index']['dir']}")
  if made.get("vocabulary"):
    print(f"  vocabulary:   {made['vocabulary']['path']}")
  if made.get("ramp_data"):
    print(f"  RAMP data:    {Path(made['ramp_data']['files']['mask1']).parent}")
  if made.get("trajectories"):
    kept = ", ".join(f"{name} {count:,}" for name, count in made["trajectories"]["kept"].items())
    print(f"  trajectories: {Path(made['trajectories']['qa']).parent} ({kept})")
  for name, title in (("sft", "RAMP SFT"), ("dapo", "DAPO"), ("qa_sft", "QA SFT")):
    if made.get(name):
      print(f"  {title + ':':<13} {made[name]['checkpoint']}")
  if made.get("eval"):
    for method, result in made["eval"]["runs"].items():
      print(f"  eval {method + ':':<20} recall {result['recall']:.1%}, EM {result['em']:.1%}, F1 {result['f1']:.1%} "
            f"on held-out questions -> {result['dir']}")
  if made.get("report"):
    print(f"  report:       {made['report']['md']} (chart {made['report']['png']})")
    table = Path(made["report"]["md"]).read_text().split("\n### ")[0]  # The main metric's table.
    print("\n" + table.strip())
  print(f"  summary:      {Path(summary['workdir']) / 'summary.json'}")
