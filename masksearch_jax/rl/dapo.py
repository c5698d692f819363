"""The DAPO loop: search-agent rollouts, rewards, dynamic sampling, clip-higher updates, on the SFT mesh.

One training batch (see /shared/reference/dapo.md):

1. Generation batches of `gen_batch_size` prompts x `group_size` responses are rolled out
   by the current policy (`agent.rollout.SearchAgent`, KV cache across turns) and scored
   (`rl.rewards.RewardFunction`: answer, format and overlong shaping in tokens).
2. Dynamic sampling keeps a prompt's group only when its rewards are not all equal
   (`rl.dynamic_sampling`), until `train_batch_size` groups are kept (then truncated);
   after `max_num_gen_batches` generation batches without enough groups it stops with an
   error that says so.
3. Group advantages (unbiased std + 1e-6, `rl.advantages`); each response's tokens are laid
   out as prompt + response with loss weight 1 on the tokens the policy wrote and 0 on the
   prompt, the environment's observations and padding; the rollout's log-probabilities are
   the old policy's.
4. The batch is split into mini-batches of `mini_batch_size` prompts; each is one optimizer
   step: gradient accumulation over micro-batches with DAPO's loss (`rl.dapo_loss`:
   clip-higher, optional dual clip, the sum over the valid tokens of the whole mini-batch
   divided by their number; no KL term).

Training steps count optimizer steps: the learning-rate schedule, checkpoints, logs and
`total_steps` use that count; generation batches and discarded groups are counted and
logged separately. A curriculum over RAMP mask counts gives each stage a number of
optimizer steps. Checkpoints hold the parameters, optimizer state and step, and in their
metadata where each stage's task stream stands and the dynamic sampler's counters (each
generation batch's seed derives from them), so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from masksearch_jax.agent.offline_teacher import load_world, ramp_examples
from masksearch_jax.agent.rollout import RolloutConfig, SearchAgent
from masksearch_jax.agent.self_evolve import rollout_task, task_text, world_index
from masksearch_jax.agent.synthesis import SynthesisTask, make_tasks
from masksearch_jax.data import seqio_tasks
from masksearch_jax.data.trajectories import Trajectory
from masksearch_jax.errors import ConfigError
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.retrieval import open_retriever
from masksearch_jax.rl.advantages import group_advantages
from masksearch_jax.rl.dapo_loss import ClipSettings, policy_loss, token_log_probs, valid_token_count
from masksearch_jax.rl.dynamic_sampling import DynamicSampler, Group, SampledBatch
from masksearch_jax.rl.rewards import RewardFunction, RewardInput
from masksearch_jax.training import checkpoints as checkpoints_lib
from masksearch_jax.training.partitioning import Partitioner
from masksearch_jax.training.trainer import NonFiniteLossError, _strip_boxes, default_optimizer, resume_position

logger = logging.getLogger(__name__)

# -- tasks ------------------------------------------------------------------------------------------


class TaskStream:
  """An endless, deterministic stream of tasks (the corpus or question list, repeated), with a position.

  Args:
    make_items: Returns the items of one pass (RAMP examples or questions) in a fixed order.
    kind: "ramp" or "qa".
    position: Tasks already taken (a resumed run starts there).
  """

  def __init__(self, make_items: Callable[[], Iterator[Any]], kind: str, position: int = 0):
    self.make_items, self.kind, self.position = make_items, kind, position
    self._iterator = self._tasks()
    for _ in range(position):
      next(self._iterator)

  def _tasks(self) -> Iterator[SynthesisTask]:
    while True:
      empty = True
      for task in make_tasks(self.kind, self.make_items()):
        empty = False
        yield task
      if empty:
        raise ConfigError(f"the {self.kind} task source is empty")

  def take(self, n: int) -> list[SynthesisTask]:
    self.position += n
    return list(itertools.islice(self._iterator, n))


def stage_streams(kind: str, stages: Sequence[tuple[Any, int]], positions: Sequence[int], split: str, world: Any,
                  task_items: Callable[[Any], Iterable[Any]] | None = None) -> list[TaskStream]:
  """One task stream per curriculum stage: RAMP with the stage's mask count, or the world's questions
  (or `task_items(stage)`, when given, for each pass)."""
  streams = []
  for (stage, _), position in zip(stages, positions):
    if task_items is not None:
      streams.append(TaskStream(lambda s=stage: iter(task_items(s)), kind, position))
    elif kind == "ramp":
      masks = None if stage in (None, 0, "mixed") else int(stage)
      streams.append(TaskStream(lambda m=masks: ramp_examples(split, m), "ramp", position))
    else:
      wanted = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}[split]
      questions = [q for q in load_world(world).questions if q.split == wanted]
      streams.append(TaskStream(lambda qs=questions: iter(qs), "qa", position))
  return streams


# -- the update -------------------------------------------------------------------------------------


def rl_features(trajectories: Sequence[Trajectory], advantages: np.ndarray, length: int, bos_id: int = 0
                ) -> dict[str, np.ndarray]:
  """Model inputs for the policy update, one row per response, padded to `length`.

  Each row is [bos] + prompt + response shifted by one: `inputs` predict `targets`; `weights`
  are 1 where the target is a token the policy wrote, else 0; `old_logprobs` are the rollout's
  log-probabilities at those targets; `advantages` repeat the response's advantage.
  """
  n = len(trajectories)
  arrays = {"inputs": np.zeros((n, length), np.int32), "targets": np.zeros((n, length), np.int32),
            "weights": np.zeros((n, length), np.float32), "old_logprobs": np.zeros((n, length), np.float32),
            "positions": np.zeros((n, length), np.int32), "segment_ids": np.zeros((n, length), np.int32),
            "advantages": np.asarray(advantages, np.float32).reshape(n)}
  for i, t in enumerate(trajectories):
    sequence = [bos_id, *t.prompt_token_ids, *t.token_ids]
    if len(sequence) - 1 > length:
      raise ValueError(f"trajectory {t.id} has {len(sequence)} tokens; the update's rows hold {length + 1}")
    start = len(t.prompt_token_ids)  # Index in `targets` of the response's first token.
    size = len(sequence) - 1
    arrays["inputs"][i, :size] = sequence[:-1]
    arrays["targets"][i, :size] = sequence[1:]
    arrays["positions"][i, :size] = np.arange(size)
    arrays["segment_ids"][i, :size] = 1
    arrays["weights"][i, start:size] = t.model_token_mask
    arrays["old_logprobs"][i, start:size] = [0.0 if p is None else p for p in t.logprobs]
  return arrays


def make_dapo_update(config: TransformerConfig, optimizer: optax.GradientTransformation, clip: ClipSettings, *,
                     accumulation_steps: int) -> Callable:
  """The jittable optimizer step on one mini-batch: `(state, batch) -> (state, metrics)`.

  The batch's rows are split into `accumulation_steps` micro-batches; every micro-batch's loss
  is divided by the valid tokens of the whole mini-batch, so the summed gradients are those of
  DAPO's token-mean over the mini-batch.
  """
  decoder = Decoder(config)

  def micro_loss(params, micro, num_valid):
    logits = decoder.apply({"params": params}, micro["inputs"], micro["positions"], micro["segment_ids"])
    logp = token_log_probs(logits, micro["targets"])
    return policy_loss(logp, micro["old_logprobs"], micro["advantages"], micro["weights"],
                       num_valid_tokens=num_valid, clip=clip, logits=logits)

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def update(state, batch):
    num_valid = valid_token_count(batch["weights"])
    micro_batches = jax.tree_util.tree_map(lambda x: x.reshape((accumulation_steps, -1) + x.shape[1:]), batch)

    def accumulate(carry, micro):
      (loss, metrics), grads = grad_fn(state["params"], micro, num_valid)
      metrics = dict(metrics, loss=loss)
      return jax.tree_util.tree_map(jnp.add, carry, (grads, metrics)), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state["params"])
    metric_zeros = {k: jnp.zeros((), jnp.float32) for k in ("pg_loss", "clip_frac_low", "clip_frac_high",
                                                            "dual_clip_frac", "approx_kl", "ratio_mean", "entropy",
                                                            "valid_tokens", "loss")}
    (grads, metrics), _ = jax.lax.scan(accumulate, (zeros, metric_zeros), micro_batches)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  return update


# -- the loop ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class DapoSummary:
  """What a `train_dapo` run did."""

  model_dir: str
  final_step: int
  generation_batches: int
  discarded_groups: int
  final_reward: float | None
  resumed_from: int | None
  seconds: float
  reward_history: list[float] = dataclasses.field(default_factory=list)  # Mean reward of each training batch.
  seconds_by_part: dict[str, float] = dataclasses.field(default_factory=dict)  # generation, retrieval, reward, update.
  batch_history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # Each batch's metrics and times.


@gin.configurable(module="masksearch_jax.rl.dapo")
def train_dapo(*,
               model: TransformerConfig,
               model_dir: str,
               total_steps: int,
               kind: str = "ramp",
               curriculum: Sequence[tuple[Any, int]] | None = None,
               num_masks: int | None = 1,
               split: str = "train",
               group_size: int = 8,
               train_batch_size: int = 8,
               gen_batch_size: int = 12,
               mini_batch_size: int = 4,
               micro_batch_size: int = 8,
               max_num_gen_batches: int = 10,
               rollout: RolloutConfig | None = None,
               reward_fn: RewardFunction | None = None,
               clip: ClipSettings = ClipSettings(),
               optimizer: Callable[..., optax.GradientTransformation] = default_optimizer,
               learning_rate: optax.Schedule | float = 1e-6,
               max_grad_norm: float | None = 1.0,
               partitioner: Partitioner | None = None,
               checkpoint_period: int = 50,
               checkpoints_to_keep: int | None = 3,
               initial_checkpoint_path: str | None = None,
               index: str | None = None,
               url: str | None = None,
               world: Any = None,
               task_items: Callable[[Any], Iterable[Any]] | None = None,
               vocabulary: Any = None,
               random_seed: int = 0,
               progress: bool = True) -> DapoSummary:
  """Trains the policy with DAPO on search-agent rollouts (see the module docstring).

  Args:
    model: The policy's shape (MODEL).
    model_dir: Where checkpoints, TensorBoard events and config.gin go (MODEL_DIR).
    total_steps: Optimizer steps in all (TRAIN_STEPS); a multiple of the updates per training
      batch (train_batch_size / mini_batch_size).
    kind: "ramp" (fill masked paragraphs) or "qa" (answer the world's questions).
    curriculum: RAMP: [(mask count, optimizer steps), ...] run in order (steps summing to
      `total_steps`); None: one stage of `num_masks` masks (QA: one stage).
    num_masks: RAMP masks per paragraph without a curriculum (None: MaskSearch's own rule).
    split: Where the prompts come from.
    group_size: Responses per prompt (G).
    train_batch_size: Prompts (groups) kept per training batch.
    gen_batch_size: Prompts per generation batch, before dynamic sampling.
    mini_batch_size: Prompts per optimizer step (each step uses mini_batch_size * G responses).
    micro_batch_size: Responses per gradient-accumulation micro-batch.
    max_num_gen_batches: Most generation batches for one training batch (0: unlimited).
    rollout: The rollouts' settings (temperature, turns, lengths: `RolloutConfig`); its
      `max_length` is also the row length of the update.
    reward_fn: The reward (`RewardFunction`, its weights and overlong shaping in Gin).
    clip: DAPO's clipping (`ClipSettings`: eps_low, eps_high, clip_ratio_c).
    optimizer: A function of the learning rate returning an optax transformation.
    learning_rate: A number or a schedule of the optimizer step.
    max_grad_norm: Clip gradients to this global norm first (DAPO: 1.0); None: no clipping.
    partitioner: Mesh and rules, as in SFT (default: data parallel over every device).
    checkpoint_period: Save after the training batch in which the step passes a multiple of
      this (and at the end).
    checkpoints_to_keep: Newest checkpoints kept.
    initial_checkpoint_path: The SFT checkpoint to start from (INITIAL_CHECKPOINT_PATH).
    index: The search index (default: the world's cached index); or `url`.
    url: A retrieval server (Search-R1's /retrieve).
    world: QA: the world whose questions are asked (None: Gin's `QAFiles.world`).
    task_items: Instead of the corpus or world: a function of the stage's value returning the
      items of one pass (RAMP examples or questions, as `synthesis.make_tasks` reads them).
    vocabulary: The policy's vocabulary (None: the tasks' vocabulary from Gin).
    random_seed: Seed of the initialisation (without a checkpoint) and of the rollouts.
    progress: Progress bar.

  Returns:
    A `DapoSummary`.
  """
  from clu import metric_writers
  from tqdm.auto import tqdm

  start_time = time.perf_counter()
  rollout = rollout or RolloutConfig()
  reward_fn = reward_fn or RewardFunction()
  partitioner = partitioner or Partitioner()
  if kind not in ("ramp", "qa"):
    raise ConfigError(f"train_dapo.kind must be 'ramp' or 'qa', got {kind!r}")
  for name, value in (("group_size", group_size), ("train_batch_size", train_batch_size),
                      ("gen_batch_size", gen_batch_size), ("mini_batch_size", mini_batch_size),
                      ("micro_batch_size", micro_batch_size)):
    if value < 1:
      raise ConfigError(f"train_dapo.{name} must be positive, got {value}")
  if train_batch_size % mini_batch_size:
    raise ConfigError(f"train_batch_size {train_batch_size} is not a multiple of mini_batch_size {mini_batch_size}")
  if (mini_batch_size * group_size) % micro_batch_size:
    raise ConfigError(f"a mini-batch of {mini_batch_size * group_size} responses does not split into micro-batches "
                      f"of {micro_batch_size}")
  updates_per_batch = train_batch_size // mini_batch_size
  stages = list(curriculum) if curriculum else [(num_masks if kind == "ramp" else None, total_steps)]
  if sum(steps for _, steps in stages) != total_steps:
    raise ConfigError(f"the curriculum's steps {[s for _, s in stages]} do not sum to total_steps {total_steps}")
  bad = [steps for _, steps in stages if steps % updates_per_batch or steps < 1]
  if bad:
    raise ConfigError(f"every stage needs a positive multiple of {updates_per_batch} steps (the updates of one "
                      f"training batch), got {bad[0]}")
  partitioner.check_batch(mini_batch_size * group_size)

  model_path = Path(model_dir).absolute()
  if jax.process_index() == 0:
    model_path.mkdir(parents=True, exist_ok=True)
    (model_path / "config.gin").write_text(gin.config_str())
  schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
  transform = optimizer(schedule)
  if max_grad_norm:
    transform = optax.chain(optax.clip_by_global_norm(max_grad_norm), transform)
  decoder = Decoder(model)

  def init_boxed(rng):
    boxed = decoder.init(rng, jnp.zeros((1, rollout.max_length), jnp.int32))["params"]
    return {"params": boxed, "opt_state": transform.init(boxed), "step": jnp.zeros((), jnp.int32)}

  vocabulary = vocabulary or seqio_tasks.VOCABULARY.vocabulary
  if vocabulary.vocab_size > model.vocab_size:
    raise ConfigError(f"the vocabulary has {vocabulary.vocab_size} ids but the model only {model.vocab_size}")
  if index is None and url is None:
    index = world_index(kind, world)

  with partitioner.activate():
    abstract_boxed = jax.eval_shape(init_boxed, jax.random.PRNGKey(random_seed))
    partitioner.check_divisibility(abstract_boxed["params"])
    state_shardings = partitioner.shardings(abstract_boxed)
    abstract_state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                            _strip_boxes(abstract_boxed), state_shardings)
    run_checkpoints = checkpoints_lib.TrainingCheckpoints(
        model_path / "checkpoints", checkpoints_lib.SaveCheckpointConfig(period=checkpoint_period,
                                                                        keep=checkpoints_to_keep))
    resumed_from = run_checkpoints.latest_step()
    if resumed_from is not None:
      state, meta = run_checkpoints.restore(resumed_from, abstract_state)
      # As the SFT trainer: a finished run given more steps goes on; a finished stage cannot change.
      resume_position(meta.get("stages") or [], stages, resumed_from, str(run_checkpoints.directory))
    else:
      state = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=state_shardings)(
          jax.random.PRNGKey(random_seed))
      if initial_checkpoint_path:
        state = {**state, "params": checkpoints_lib.load_params(initial_checkpoint_path, abstract_state["params"])}
      meta = {}
    update = jax.jit(make_dapo_update(model, transform, clip,
                                      accumulation_steps=mini_batch_size * group_size // micro_batch_size),
                     in_shardings=(state_shardings, None), out_shardings=(state_shardings, None),
                     donate_argnums=(0,))
    positions = list(meta.get("task_positions", [0] * len(stages)))
    sampler = DynamicSampler(train_batch_size=train_batch_size, group_size=group_size, gen_batch_size=gen_batch_size,
                             max_num_gen_batches=max_num_gen_batches, seed=random_seed)
    if "sampler" in meta:
      sampler.load_state_dict(meta["sampler"])
    streams = stage_streams(kind, stages, positions, split, world, task_items)
    writer = metric_writers.create_default_writer(str(model_path / "tensorboard"),
                                                  just_logging=jax.process_index() > 0)
    step = int(state["step"])
    bar = tqdm(total=total_steps, initial=step, desc="dapo", unit="step", disable=not progress or jax.process_index())
    last_reward = None
    history: list[float] = []
    times = dict.fromkeys(("generation", "retrieval", "reward", "update"), 0.0)
    batches: list[dict[str, float]] = []
    try:
      with open_retriever(index=index, url=url) as retriever:
        agent = SearchAgent(model, state["params"], vocabulary, retriever, rollout, partitioner=partitioner)
        while step < total_steps:
          stage = _stage_at(stages, step)
          agent.sampler.params = state["params"]

          timer = dict.fromkeys(("generation", "retrieval", "reward", "update"), 0.0)

          def generate(num_prompts: int, seed: int, stream=streams[stage]) -> list[Group]:
            return _rollout_and_score(agent, reward_fn, stream.take(num_prompts), group_size, seed, timer)

          batch = sampler.sample(generate)
          trajectories = [t for group in batch.groups for t, _ in group.responses]
          rewards = np.stack([group.rewards for group in batch.groups])
          advantages = np.asarray(group_advantages(jnp.asarray(rewards))).reshape(-1)
          features = rl_features(trajectories, advantages, rollout.max_length, rollout.bos_id)
          batch_metrics = _batch_metrics(batch, stage)
          last_reward = batch_metrics["reward/total"]
          history.append(last_reward)
          per_update = mini_batch_size * group_size
          for u in range(updates_per_batch):
            rows = {k: v[u * per_update:(u + 1) * per_update] for k, v in features.items()}
            rows = {k: jax.make_array_from_process_local_data(partitioner.data_sharding(v.ndim), v)
                    for k, v in rows.items()}
            update_started = time.perf_counter()
            state, metrics = update(state, rows)
            step += 1
            scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
            timer["update"] += time.perf_counter() - update_started
            if not math.isfinite(scalars["loss"]):
              raise NonFiniteLossError(f"DAPO loss is {scalars['loss']} at step {step}; stopped, the last good "
                                       f"checkpoint in {run_checkpoints.directory} is kept")
            scalars.update(batch_metrics)
            scalars.update({"learning_rate": float(schedule(step - 1)),
                            "sampling/gen_batches_total": float(sampler.num_gen_batches),
                            "sampling/groups_discarded_total": float(sampler.num_groups_discarded)})
            writer.write_scalars(step, scalars)
            bar.update(1)
            bar.set_postfix(reward=f"{last_reward:.3f}", kept=f"{batch.kept_share:.2f}",
                            loss=f"{scalars['loss']:.3f}")
          for name, seconds in timer.items():
            times[name] += seconds
          batches.append({**batch_metrics, **{f"time/{name}": seconds for name, seconds in timer.items()}})
          writer.write_scalars(step, {f"time/{name}": seconds for name, seconds in timer.items()})
          if step // checkpoint_period > (step - updates_per_batch) // checkpoint_period or step == total_steps:
            run_checkpoints.save(step, state, {
                "step": step, "stages": [list(s) for s in stages], "task_positions": [s.position for s in streams],
                "sampler": sampler.state_dict(), "model": dataclasses.asdict(model)})
    finally:
      bar.close()
      run_checkpoints.close()
      writer.flush()
      writer.close()
  return DapoSummary(str(model_path), step, sampler.num_gen_batches, sampler.num_groups_discarded, last_reward,
                     resumed_from, time.perf_counter() - start_time, history, times, batches)


def _stage_at(stages: Sequence[tuple[Any, int]], step: int) -> int:
  end = 0
  for i, (_, steps) in enumerate(stages):
    end += steps
    if step < end:
      return i
  return len(stages) - 1


def _rollout_and_score(agent: SearchAgent, reward_fn: RewardFunction, tasks: list[SynthesisTask], group_size: int,
                       seed: int, timer: dict[str, float]) -> list[Group]:
  """G rollouts of each task, scored: one `Group` per task whose responses are (trajectory, reward components).

  Adds the seconds spent generating, waiting for the retriever and scoring to `timer`.
  """
  started = time.perf_counter()
  rollout_tasks = [dataclasses.replace(rollout_task(t), id=f"{t.id}#{g}") for t in tasks for g in range(group_size)]
  by_id = {t.id: t for t in agent.run(rollout_tasks, seed=seed)}
  flat = [by_id[r.id] for r in rollout_tasks]
  scored_at = time.perf_counter()
  timer["retrieval"] += agent.stats.search_seconds
  timer["generation"] += scored_at - started - agent.stats.search_seconds
  scored = reward_fn([RewardInput.from_trajectory(t, task_text(tasks[i // group_size]))
                      for i, t in enumerate(flat)])
  timer["reward"] += time.perf_counter() - scored_at
  groups = []
  for k, task in enumerate(tasks):
    rows = range(k * group_size, (k + 1) * group_size)
    responses = [(flat[i], {name: float(values[i]) for name, values in scored.components.items()}) for i in rows]
    groups.append(Group(prompt=task, responses=responses, rewards=scored.total[k * group_size:(k + 1) * group_size]))
  return groups


def _batch_metrics(batch: SampledBatch, stage: int) -> dict[str, float]:
  """Reward, length, search and sampling metrics of a training batch."""
  responses = [response for group in batch.groups for response in group.responses]
  trajectories = [t for t, _ in responses]
  lengths = np.array([len(t.token_ids) for t in trajectories], np.float64)
  metrics = {"reward/total": float(np.mean([group.rewards for group in batch.groups]))}
  for name in responses[0][1]:
    metrics[f"reward/{name}"] = float(np.mean([components[name] for _, components in responses]))
  metrics.update(batch.metrics())
  metrics.update({
      "response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
      "response_length/overlong_share": float(np.mean([t.stop_reason == "max_length" for t in trajectories])),
      "searches_per_trajectory": float(np.mean([len(t.searches) for t in trajectories])),
      "stage": float(stage)})
  return metrics
