"""The T5X-style trainer: `train(...)`, configured by Gin in T5X's terms.

One keyword-only `train()` runs supervised training of the decoder on a SeqIO
task or mixture, or on a curriculum of them (stage after stage), sharded by the
`Partitioner` on one CPU, fake CPU devices, several hosts, or TPU/GPU pods with
the same code. Checkpoints (orbax) carry the parameters, the optimizer state,
the curriculum stage and the input position, so a resumed run sees exactly the
data an uninterrupted run would have seen.

The loss is cross-entropy weighted by the converter's `decoder_loss_weights`
(prompt, retrieved observations and padding weigh 0), summed over every
micro-batch of gradient accumulation and divided by the number of weighted
tokens of the whole batch (or by a fixed `loss_normalizing_factor`), plus an
optional z-loss.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from masksearch_jax.data import input_pipeline
from masksearch_jax.data.input_pipeline import DatasetConfig
from masksearch_jax.errors import ConfigError
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training import checkpoints as checkpoints_lib
from masksearch_jax.training.partitioning import Partitioner

logger = logging.getLogger(__name__)

Batch = dict[str, jax.Array]


class NonFiniteLossError(ArithmeticError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


# -- the loss ------------------------------------------------------------------------------------


def loss_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array, *, z_loss: float = 0.0,
              label_smoothing: float = 0.0) -> dict[str, jax.Array]:
  """Weighted sums over tokens: cross-entropy (+ z-loss), correct predictions, weights.

  Args:
    logits: [batch, length, vocab] float32.
    targets: [batch, length] token ids.
    weights: [batch, length] loss weights (0 on prompt, observations and padding).
    z_loss: Coefficient of log(Z)^2, which keeps the softmax normaliser near 1.
    label_smoothing: Mass spread uniformly over the vocabulary (T5X's LABEL_SMOOTHING).

  Returns:
    {'loss', 'z_loss', 'correct', 'weight'}: sums over weighted tokens.
  """
  log_z = jax.nn.logsumexp(logits, axis=-1)
  # The target's logit by comparing against the vocabulary's ids rather than by gathering: the
  # comparison fuses into the passes over the logits that logsumexp already makes, and so does its
  # gradient, where a gather's is a scatter into a fresh [batch, length, vocab] array.
  is_target = jnp.arange(logits.shape[-1]) == targets[..., None]
  target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
  nll = log_z - target_logit
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * (logits.mean(axis=-1) - log_z)
  z = z_loss * jnp.square(log_z)
  weights = weights.astype(jnp.float32)
  return {
      "loss": jnp.sum((nll + z) * weights),
      "z_loss": jnp.sum(z * weights),
      # A prediction is correct when the target's logit is the largest (a max, cheaper than argmax).
      "correct": jnp.sum((target_logit >= jnp.max(logits, axis=-1)) * weights),
      "weight": jnp.sum(weights),
  }


def _forward_sums(params, config: TransformerConfig, batch: Batch, z_loss: float, label_smoothing: float):
  logits = Decoder(config).apply({"params": params}, batch["decoder_input_tokens"],
                                 positions=batch.get("decoder_positions"),
                                 segment_ids=batch.get("decoder_segment_ids"))
  return loss_sums(logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], z_loss=z_loss,
                   label_smoothing=label_smoothing)


# -- the train state and step ----------------------------------------------------------------------


def make_train_step(config: TransformerConfig, optimizer: optax.GradientTransformation, *,
                    accumulation_steps: int = 1, z_loss: float = 0.0, label_smoothing: float = 0.0,
                    loss_normalizing_factor: float | None = None) -> Callable:
  """The pure step: (state, batch) -> (state, metrics), with gradient accumulation inside.

  The batch is split into `accumulation_steps` micro-batches; their summed gradients and
  losses are divided once by the weighted tokens of the whole batch (or by
  `loss_normalizing_factor`), so the step equals one over the full batch.
  """

  def sums_and_grads(params, micro):
    def objective(p):
      sums = _forward_sums(p, config, micro, z_loss, label_smoothing)
      return sums["loss"], sums
    return jax.grad(objective, has_aux=True)(params)

  def step(state, batch):
    params = state["params"]
    if accumulation_steps == 1:
      grads, sums = sums_and_grads(params, batch)
    else:
      micro_batches = jax.tree_util.tree_map(
          lambda x: x.reshape((accumulation_steps, x.shape[0] // accumulation_steps) + x.shape[1:]), batch)

      def accumulate(carry, micro):
        grads, sums = sums_and_grads(params, micro)
        return jax.tree_util.tree_map(jnp.add, carry, (grads, sums)), None

      zeros = (jax.tree_util.tree_map(jnp.zeros_like, params),
               {k: jnp.zeros((), jnp.float32) for k in ("loss", "z_loss", "correct", "weight")})
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro_batches)
    normalizer = sums["weight"] if loss_normalizing_factor is None else jnp.float32(loss_normalizing_factor)
    normalizer = jnp.maximum(normalizer, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / normalizer, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state, "step": state["step"] + 1}
    metrics = {"loss": sums["loss"] / normalizer, "z_loss": sums["z_loss"] / normalizer,
               "accuracy": sums["correct"] / jnp.maximum(sums["weight"], 1.0), "weighted_tokens": sums["weight"],
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return step


def make_eval_step(config: TransformerConfig) -> Callable:
  """(params, batch) -> summed loss, correct and weight (no z-loss)."""
  def step(params, batch):
    return _forward_sums(params, config, batch, 0.0, 0.0)
  return step


# -- the run -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainSummary:
  """What `train` did."""

  model_dir: str
  final_step: int
  final_loss: float | None
  resumed_from_step: int | None
  seconds: float


def warmup_cosine_schedule(peak_value: float, warmup_steps: int, total_steps: int,
                           end_fraction: float = 0.1) -> optax.Schedule:
  """Linear warm-up from 0 to `peak_value`, then cosine decay to `end_fraction * peak_value`.

  Args:
    peak_value: The learning rate after warm-up.
    warmup_steps: Steps of warm-up (at most half of `total_steps`, so short runs still decay).
    total_steps: Steps in all (TRAIN_STEPS).
    end_fraction: The final learning rate, as a share of the peak.
  """
  warmup = max(0, min(warmup_steps, total_steps // 2))
  return optax.warmup_cosine_decay_schedule(0.0, peak_value, warmup, max(total_steps, warmup + 1),
                                            end_value=peak_value * end_fraction)


def even_curriculum(mixtures: Sequence[str], total_steps: int) -> list[tuple[str, int]]:
  """Stages of (nearly) equal length over `mixtures`, in order, summing to `total_steps`.

  Args:
    mixtures: One task or mixture per stage, e.g. the RAMP curriculum stages 1 to 4.
    total_steps: Steps in all (TRAIN_STEPS); the first stages take any remainder.
  """
  if total_steps < len(mixtures):
    raise ValueError(f"{total_steps} steps cannot make {len(mixtures)} curriculum stages")
  base, extra = divmod(total_steps, len(mixtures))
  return [(name, base + (i < extra)) for i, name in enumerate(mixtures)]


def default_optimizer(learning_rate: optax.Schedule | float) -> optax.GradientTransformation:
  """AdamW with weight decay 0.01 (used when OPTIMIZER is not set)."""
  return optax.adamw(learning_rate, b1=0.9, b2=0.95, weight_decay=0.01)


def _stages(curriculum: Sequence[tuple[str, int]] | None, cfg: DatasetConfig,
            total_steps: int) -> list[tuple[str, int]]:
  """(mixture, steps) per stage; without a curriculum, one stage of `total_steps`."""
  if not curriculum:
    return [(cfg.mixture_or_task_name, total_steps)]
  stages = [(str(name), int(steps)) for name, steps in curriculum]
  if sum(steps for _, steps in stages) != total_steps:
    raise ConfigError(f"the curriculum's stages sum to {sum(s for _, s in stages)} steps, but total_steps is "
                     f"{total_steps}: {stages}")
  if any(steps < 1 for _, steps in stages):
    raise ConfigError(f"every curriculum stage needs at least one step: {stages}")
  return stages


def resume_position(written: Sequence[Sequence[Any]], stages: Sequence[tuple[str, int]], step: int,
                    source: str) -> tuple[int, int]:
  """(stage index, step within it) at which a checkpoint of `step` continues under `stages`.

  The checkpoint was written under the plan `written`. As in T5X, a run may be given more steps
  and go on (TRAIN_STEPS raised, or the current or a later curriculum stage lengthened or
  shortened); the stages it already finished, and their order and mixtures, must stay as they
  were, since its data position is counted within them.

  Raises:
    ConfigError: naming `source`, if `stages` cannot continue the checkpoint.
  """
  names = [str(name) for name, _ in written]
  mismatch = ConfigError(f"checkpoint {step} in {source} was written by a run with curriculum "
                         f"{[list(s) for s in written]}, which {list(stages)} cannot continue")
  if names != [str(name) for name, _ in stages]:
    raise mismatch
  start = 0
  for i, ((_, steps_before), (_, steps_now)) in enumerate(zip(written, stages)):
    if step < start + int(steps_before) or i == len(stages) - 1:
      # The stage the checkpoint is in (or ended last): it may change length if not overrun.
      if step - start > steps_now:
        raise mismatch
      if step - start == steps_now:
        return i + 1, 0
      return i, step - start
    if int(steps_before) != steps_now:
      raise mismatch
    start += steps_now
  raise mismatch


def _global_batch(local: dict[str, np.ndarray], partitioner: Partitioner) -> Batch:
  return {k: jax.make_array_from_process_local_data(partitioner.data_sharding(v.ndim), v) for k, v in local.items()}


def _write_config(model_dir: Path) -> None:
  import gin
  if jax.process_index() == 0:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.gin").write_text(gin.config_str())


def train(*,
          model: TransformerConfig,
          train_dataset_cfg: DatasetConfig,
          model_dir: str,
          total_steps: int,
          train_eval_dataset_cfg: DatasetConfig | None = None,
          partitioner: Partitioner | None = None,
          optimizer: Callable[..., optax.GradientTransformation] = default_optimizer,
          learning_rate: optax.Schedule | float = 1e-3,
          max_grad_norm: float | None = 1.0,
          checkpoint_cfg: checkpoints_lib.CheckpointConfig = checkpoints_lib.CheckpointConfig(),
          curriculum: Sequence[tuple[str, int]] | None = None,
          eval_period: int = 0,
          eval_steps: int = 10,
          random_seed: int = 0,
          gradient_accumulation_steps: int = 1,
          z_loss: float = 1e-4,
          label_smoothing: float = 0.0,
          loss_normalizing_factor: float | None = None,
          initial_checkpoint_path: str | None = None,
          log_period: int = 10,
          peak_flops_per_device: float = 3.4e11,
          progress: bool = True) -> TrainSummary:
  """Trains `model` on `train_dataset_cfg` (or on the stages of `curriculum`).

  Args:
    model: The model's shape (MODEL: a preset from gin/models/).
    train_dataset_cfg: What to train on (MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
      BATCH_SIZE, SHUFFLE_TRAIN_EXAMPLES, ...). `batch_size` is global, across hosts.
    model_dir: Where checkpoints, TensorBoard events and config.gin go (MODEL_DIR).
    total_steps: Optimizer steps in all (TRAIN_STEPS).
    train_eval_dataset_cfg: Evaluated every `eval_period` steps (for `eval_steps` batches).
    partitioner: Mesh and logical axis rules; default: data parallel over every device.
    optimizer: A function of the learning rate returning an optax transformation
      (OPTIMIZER, e.g. `@optax.adamw` with its other arguments bound in Gin).
    learning_rate: A number, or an optax schedule of the step (e.g.
      `@optax.warmup_cosine_decay_schedule()`); logged as `learning_rate`.
    max_grad_norm: Clip gradients to this global norm first; None: no clipping.
    checkpoint_cfg: When to save and what to restore (T5X's CheckpointConfig).
    curriculum: [(mixture or task, steps), ...] run one after another, e.g. RAMP with
      1 mask, then 2, 3, 4; each stage reads `train_dataset_cfg` with its own name;
      the steps must sum to `total_steps`. None: one stage.
    eval_period: Evaluate every this many steps (0: never).
    eval_steps: Batches per evaluation.
    random_seed: Seed of the parameter initialisation (RANDOM_SEED).
    gradient_accumulation_steps: Micro-batches per step; the batch must divide by it.
    z_loss: Coefficient of the z-loss (Z_LOSS).
    label_smoothing: LABEL_SMOOTHING.
    loss_normalizing_factor: None divides the summed loss by the weighted tokens of the
      batch; a number divides by that constant (LOSS_NORMALIZING_FACTOR).
    initial_checkpoint_path: Parameters to start from when there is no checkpoint of
      this run yet: a parameter checkpoint (`masksearch import-hf`) or another run's
      checkpoints directory (INITIAL_CHECKPOINT_PATH).
    log_period: Write metrics every this many steps.
    peak_flops_per_device: Peak FLOP/s of one device, for the estimated model FLOP
      utilisation (mfu) metric.
    progress: Show a progress bar.

  Returns:
    A `TrainSummary`.
  """
  from clu import metric_writers
  from tqdm.auto import tqdm

  start_time = time.perf_counter()
  partitioner = partitioner or Partitioner()
  model_path = Path(model_dir).absolute()
  _write_config(model_path)
  stages = _stages(curriculum, train_dataset_cfg, total_steps)
  for name, _ in stages:  # A wrong name fails now, not after the model is built.
    input_pipeline.provider(dataclasses.replace(train_dataset_cfg, mixture_or_task_name=name))
  if train_eval_dataset_cfg is not None and eval_period:
    input_pipeline.provider(train_eval_dataset_cfg)
  partitioner.check_batch(train_dataset_cfg.batch_size)
  shapes = input_pipeline.batch_shapes(train_dataset_cfg)
  for length, rows in shapes:
    what = "batch size" if length == shapes[-1][0] else f"DatasetConfig.length_buckets: bucket {length}'s rows"
    if rows % (gradient_accumulation_steps * _data_parallelism(partitioner)):
      raise ConfigError(f"{what} {rows} does not divide into {gradient_accumulation_steps} micro-batches over "
                        f"{_data_parallelism(partitioner)} data-parallel devices")
  _check_vocabulary(model)

  schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
  transform = optimizer(schedule)
  if max_grad_norm:
    transform = optax.chain(optax.clip_by_global_norm(max_grad_norm), transform)

  lengths = train_dataset_cfg.task_feature_lengths
  example_length = sum(lengths.values())
  decoder = Decoder(model)

  def init_boxed(rng):
    boxed = decoder.init(rng, jnp.zeros((1, example_length), jnp.int32))["params"]
    return {"params": boxed, "opt_state": transform.init(boxed), "step": jnp.zeros((), jnp.int32)}

  with partitioner.activate():
    abstract_boxed = jax.eval_shape(init_boxed, jax.random.PRNGKey(random_seed))
    partitioner.check_divisibility(abstract_boxed["params"])
    state_shardings = partitioner.shardings(abstract_boxed)
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), _strip_boxes(abstract_boxed),
        state_shardings)

    run_checkpoints = checkpoints_lib.TrainingCheckpoints(model_path / "checkpoints", checkpoint_cfg.save)
    state, meta, resumed_from = _initial_state(run_checkpoints, checkpoint_cfg.restore, abstract_state, init_boxed,
                                               state_shardings, random_seed, initial_checkpoint_path, model)

    train_step = jax.jit(make_train_step(model, transform, accumulation_steps=gradient_accumulation_steps,
                                         z_loss=z_loss, label_smoothing=label_smoothing,
                                         loss_normalizing_factor=loss_normalizing_factor),
                         in_shardings=(state_shardings, None), out_shardings=(state_shardings, None),
                         donate_argnums=(0,))
    eval_step = jax.jit(make_eval_step(model))

    writer = metric_writers.create_default_writer(str(model_path / "tensorboard"),
                                                  just_logging=jax.process_index() > 0)
    step = int(state["step"])
    stage_index, stage_step = 0, 0
    if meta.get("stages"):
      stage_index, stage_step = resume_position(meta["stages"], stages, step, meta["restored_from"])
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress or jax.process_index())
    pending: list[tuple[int, dict]] = []
    last_loss = None
    # Weighted tokens (from the steps' metrics), and the rows' tokens and model FLOPs (from the batch
    # shapes, which vary with length buckets) since the last flush.
    window_start, window_tokens, window_rows_tokens, window_flops = time.perf_counter(), 0.0, 0, 0.0

    def meta_now() -> dict:
      return {"step": step, "stage": stage_index, "stage_step": stage_step, "stages": [list(s) for s in stages],
              "model": dataclasses.asdict(model)}

    def flush() -> float | None:
      """Checks and logs the metrics of the steps run since the last flush."""
      nonlocal pending, window_start, window_tokens, window_rows_tokens, window_flops
      if not pending:
        return None
      host = jax.device_get([m for _, m in pending])
      for (at, _), values in zip(pending, host):
        if not math.isfinite(float(values["loss"])):
          raise NonFiniteLossError(f"loss is {float(values['loss'])} at step {at}; stopped, the last good "
                                   f"checkpoint in {run_checkpoints.directory} is kept")
      at, values = pending[-1][0], host[-1]
      seconds = time.perf_counter() - window_start
      window_tokens += sum(float(v["weighted_tokens"]) for v in host)
      tokens_per_second = window_rows_tokens / seconds
      scalars = {k: float(v) for k, v in values.items()}
      scalars.update({"learning_rate": float(schedule(at - 1)), "tokens_per_second": tokens_per_second,
                      "weighted_tokens_per_second": window_tokens / seconds,
                      "mfu": window_flops / seconds / (peak_flops_per_device * jax.device_count()),
                      "stage": float(stage_index)})
      writer.write_scalars(at, scalars)
      bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc=f"{scalars['accuracy']:.3f}",
                      tok_s=f"{tokens_per_second:,.0f}")
      pending, window_start, window_tokens, window_rows_tokens, window_flops = [], time.perf_counter(), 0.0, 0, 0.0
      return scalars["loss"]

    try:
      while stage_index < len(stages):
        name, stage_steps = stages[stage_index]
        batches = _batches(dataclasses.replace(train_dataset_cfg, mixture_or_task_name=name), stage_step)
        while stage_step < stage_steps:
          local = next(batches)
          rows, length = local["decoder_target_tokens"].shape
          window_rows_tokens += rows * length * jax.process_count()
          window_flops += model.flops_per_token(length) * rows * length * jax.process_count()
          state, metrics = train_step(state, _global_batch(local, partitioner))
          step, stage_step = step + 1, stage_step + 1
          pending.append((step, metrics))
          bar.update(1)
          if step % log_period == 0:
            last_loss = flush()
          if eval_period and train_eval_dataset_cfg is not None and step % eval_period == 0:
            _evaluate(eval_step, state["params"], train_eval_dataset_cfg, eval_steps, partitioner, writer, step)
          if step % checkpoint_cfg.save.period == 0 or stage_step == stage_steps:
            last_loss = flush() or last_loss  # Never save a state whose loss was not finite.
            finished_stage = stage_step == stage_steps
            if finished_stage:
              stage_index, stage_step = stage_index + 1, 0
            run_checkpoints.save(step, state, meta_now())
            if finished_stage:
              break
        else:
          stage_index, stage_step = stage_index + 1, 0
      last_loss = flush() or last_loss
    finally:
      bar.close()
      run_checkpoints.close()
      writer.flush()
      writer.close()
  seconds = time.perf_counter() - start_time
  if jax.process_index() == 0:
    logger.info("trained to step %d in %.1f s", step, seconds)
  return TrainSummary(str(model_path), step, last_loss, resumed_from, seconds)


def _strip_boxes(tree: Any) -> Any:
  """The tree with logical-axis boxes removed (no sharding constraint: it may hold shapes only)."""
  return jax.tree_util.tree_map(lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.LogicallyPartitioned)
                                else x, tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _data_parallelism(partitioner: Partitioner) -> int:
  axes = partitioner.spec(("batch",))[0]
  axes = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
  return math.prod(partitioner.mesh.shape[a] for a in axes)


def _check_vocabulary(model: TransformerConfig) -> None:
  from masksearch_jax.data import seqio_tasks
  size = seqio_tasks.VOCABULARY.vocabulary.vocab_size
  if size > model.vocab_size:
    raise ConfigError(f"the vocabulary has {size} ids but the model's vocab_size is {model.vocab_size}; set "
                     f"TransformerConfig.vocab_size to at least {size}")


def _batches(cfg: DatasetConfig, start_step: int) -> Iterator[dict[str, np.ndarray]]:
  ds = input_pipeline.get_dataset(cfg, shard_id=jax.process_index(), num_shards=jax.process_count(),
                                  num_epochs=None, start_step=start_step)
  return ds.as_numpy_iterator()


def _initial_state(run_checkpoints, restore_cfg, abstract_state, init_boxed, state_shardings, random_seed,
                   initial_checkpoint_path, model):
  """The state to start from: a checkpoint as `restore_cfg` says, else initial parameters, else fresh.

  With `restore_cfg.path` (another run's checkpoints) this run still saves into its own directory,
  and once that holds a checkpoint, a restart resumes from its newest, as T5X does.
  """
  # A restarted run that began from another run's checkpoint continues from its own.
  resuming = restore_cfg.path is not None and run_checkpoints.latest_step() is not None
  if restore_cfg.path is None or resuming:
    source = run_checkpoints
  else:
    if not Path(restore_cfg.path).is_dir():
      raise FileNotFoundError(f"RestoreCheckpointConfig.path {restore_cfg.path} is not a checkpoints directory")
    source = checkpoints_lib.TrainingCheckpoints(restore_cfg.path)
  try:
    if restore_cfg.mode == "specific" and not resuming:
      if restore_cfg.step not in source.steps():
        raise FileNotFoundError(f"no checkpoint of step {restore_cfg.step} in {source.directory} "
                                f"(have {source.steps()})")
      restore_step = restore_cfg.step
    else:
      restore_step = source.latest_step()
    if restore_step is not None:
      state, meta = source.restore(restore_step, abstract_state)
      if meta.get("model") and TransformerConfig(**meta["model"]) != model:
        raise ConfigError(f"checkpoint {restore_step} in {source.directory} is of another model: {meta['model']}")
      logger.info("resuming from step %d (%s)", restore_step, source.directory)
      return state, {**meta, "restored_from": str(source.directory)}, restore_step
  finally:
    if source is not run_checkpoints:
      source.close()
  if not restore_cfg.fallback_to_scratch and not initial_checkpoint_path:
    raise FileNotFoundError(f"no checkpoint in {source.directory} and fallback_to_scratch is off")
  init = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=state_shardings)
  state = init(jax.random.PRNGKey(random_seed))
  if initial_checkpoint_path:
    params = checkpoints_lib.load_params(initial_checkpoint_path, abstract_state["params"])
    state = {**state, "params": params}
    logger.info("starting from the parameters in %s", initial_checkpoint_path)
  return state, {}, None


def _evaluate(eval_step, params, cfg: DatasetConfig, steps: int, partitioner: Partitioner, writer, step: int):
  ds = input_pipeline.get_dataset(cfg, shard_id=jax.process_index(), num_shards=jax.process_count(), num_epochs=1)
  totals = {"loss": 0.0, "correct": 0.0, "weight": 0.0}
  for local in ds.take(steps).as_numpy_iterator():
    sums = jax.device_get(eval_step(params, _global_batch(local, partitioner)))
    for k in totals:
      totals[k] += float(sums[k])
  weight = max(totals["weight"], 1.0)
  writer.write_scalars(step, {"eval/loss": totals["loss"] / weight, "eval/accuracy": totals["correct"] / weight})
