"""DAPO's dynamic sampling: fill a training batch with groups whose rewards differ.

A group (one prompt's G responses) whose rewards are all equal has zero advantage for every
response, so it carries no gradient and only dilutes the batch. DAPO therefore generates
batches of `gen_batch_size` prompts x G responses, keeps a group only if its rewards are not
all equal (or G = 1), and generates again until `train_batch_size` groups are kept; the
surplus of the last generation batch is cut off. After `max_num_gen_batches` generation
batches without enough groups it stops with `DynamicSamplingError` (0 = never stop).

`DynamicSampler.sample` takes the generation as a callable, `generate(num_prompts, seed)`,
which reads the next `num_prompts` prompts, samples G responses for each, scores them and
returns one `Group` per prompt; so the bookkeeping is testable without a model. Each
generation batch gets its own seed, derived from the sampler's seed and the number of
generation batches made before it (`seed_for`); `state_dict` / `load_state_dict` carry
that count and the running totals through a checkpoint, so a resumed run draws the same
seeds as an uninterrupted one.

Optimizer steps are counted by the RL loop, not here: a training step is one `sample` call
however many generation batches it took, so the learning-rate schedule follows optimizer
steps while generation batches and discarded groups are logged separately
(`SampledBatch.metrics`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np

logger = logging.getLogger(__name__)


class DynamicSamplingError(RuntimeError):
  """Too few groups with differing rewards within `max_num_gen_batches` generation batches."""


@dataclasses.dataclass(frozen=True)
class Group:
  """One prompt's responses and their rewards.

  Attributes:
    prompt: The prompt (any object the RL loop needs again, e.g. its task).
    responses: The G responses (any objects, e.g. trajectories).
    rewards: [G] the reward of each response (what advantages and the filter read).
  """

  prompt: Any
  responses: tuple[Any, ...]
  rewards: np.ndarray

  def __post_init__(self):
    object.__setattr__(self, "responses", tuple(self.responses))
    rewards = np.asarray(self.rewards, dtype=np.float64).reshape(-1)
    if len(rewards) != len(self.responses):
      raise ValueError(f"a group has {len(self.responses)} responses but {len(rewards)} rewards")
    object.__setattr__(self, "rewards", rewards)

  @property
  def size(self) -> int:
    """G, the number of responses."""
    return len(self.responses)

  def rewards_differ(self, tolerance: float = 0.0) -> bool:
    """Whether the rewards spread by more than `tolerance` (max - min)."""
    return self.size > 0 and float(np.ptp(self.rewards)) > tolerance


# (num_prompts, seed) -> one Group per prompt.
GenerateFn = Callable[[int, int], Sequence[Group]]


@dataclasses.dataclass(frozen=True)
class SampledBatch:
  """The groups of one training step and how they were found.

  Attributes:
    groups: Exactly `train_batch_size` groups, in generation order.
    gen_batches: Generation batches made for this step.
    groups_generated: Groups those batches returned.
    groups_discarded: Groups dropped because their rewards were all equal.
    groups_surplus: Groups kept but cut off past `train_batch_size`.
  """

  groups: tuple[Group, ...]
  gen_batches: int
  groups_generated: int
  groups_discarded: int
  groups_surplus: int

  @property
  def kept_share(self) -> float:
    """The share of generated groups whose rewards differed (before truncation)."""
    return (self.groups_generated - self.groups_discarded) / self.groups_generated if self.groups_generated else 0.0

  def metrics(self) -> dict[str, float]:
    """This step's sampling counts, for the logs."""
    return {"sampling/gen_batches": float(self.gen_batches),
            "sampling/groups_generated": float(self.groups_generated),
            "sampling/groups_discarded": float(self.groups_discarded),
            "sampling/groups_surplus": float(self.groups_surplus),
            "sampling/kept_share": self.kept_share}


@gin.configurable(module="masksearch_jax.rl.dynamic_sampling")
class DynamicSampler:
  """DAPO's dynamic sampling loop and its counters.

  Args:
    train_batch_size: Groups (prompts) per training step (DAPO's recipe: 512).
    group_size: G, responses per prompt (DAPO's recipe: 16); every group must have it.
    gen_batch_size: Prompts per generation batch (DAPO's recipe: 1536, three times the
      training batch, so one generation batch usually suffices); None uses
      `train_batch_size`.
    max_num_gen_batches: Most generation batches for one training step before
      `DynamicSamplingError`; 0 never stops (a reward that is constant for every prompt
      then loops forever).
    filter_groups: Drop groups whose rewards are all equal (DAPO). False keeps every group
      (plain GRPO), still cut to `train_batch_size`.
    reward_tolerance: Rewards within this spread (max - min) count as equal; the default
      only absorbs floating-point rounding.
    seed: The seed every generation batch's seed derives from.
  """

  def __init__(self, *, train_batch_size: int, group_size: int, gen_batch_size: int | None = None,
               max_num_gen_batches: int = 0, filter_groups: bool = True, reward_tolerance: float = 1e-9,
               seed: int = 0):
    gen_batch_size = train_batch_size if gen_batch_size is None else gen_batch_size
    for name, value in (("train_batch_size", train_batch_size), ("group_size", group_size),
                        ("gen_batch_size", gen_batch_size)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if max_num_gen_batches < 0:
      raise ValueError(f"max_num_gen_batches must be >= 0 (0 = unlimited), got {max_num_gen_batches}")
    if reward_tolerance < 0:
      raise ValueError(f"reward_tolerance must be >= 0, got {reward_tolerance}")
    self.train_batch_size = train_batch_size
    self.group_size = group_size
    self.gen_batch_size = gen_batch_size
    self.max_num_gen_batches = max_num_gen_batches
    self.filter_groups = filter_groups
    self.reward_tolerance = reward_tolerance
    self.seed = seed
    # Running totals over the sampler's life (carried by checkpoints).
    self.num_gen_batches = 0
    self.num_groups_generated = 0
    self.num_groups_discarded = 0
    self.num_steps = 0

  def seed_for(self, gen_batch_index: int) -> int:
    """The seed of the generation batch with this index (counted over the sampler's life)."""
    return int(np.random.SeedSequence([self.seed, gen_batch_index]).generate_state(1)[0])

  def keeps(self, group: Group) -> bool:
    """Whether a group goes into the training batch: its rewards differ, G is 1, or no filter."""
    return not self.filter_groups or self.group_size == 1 or group.rewards_differ(self.reward_tolerance)

  def sample(self, generate: GenerateFn) -> SampledBatch:
    """Generates until `train_batch_size` groups are kept; returns them.

    Args:
      generate: `generate(num_prompts, seed)` -> one `Group` of `group_size` scored
        responses per prompt (fewer when the prompts run out, but at least one).

    Returns:
      The step's groups and counts.

    Raises:
      DynamicSamplingError: `max_num_gen_batches` generation batches did not yield enough
        groups.
      ValueError: `generate` returned no group, or a group of the wrong size.
    """
    kept: list[Group] = []
    gen_batches = generated = discarded = 0
    while len(kept) < self.train_batch_size:
      if self.max_num_gen_batches and gen_batches >= self.max_num_gen_batches:
        raise DynamicSamplingError(
            f"dynamic sampling kept {len(kept)} of the {self.train_batch_size} groups a step needs after "
            f"max_num_gen_batches={self.max_num_gen_batches} generation batches of {self.gen_batch_size} prompts "
            f"({generated} groups generated, {discarded} with all {self.group_size} rewards equal). Raise "
            f"DynamicSampler.max_num_gen_batches (0 = unlimited) or gen_batch_size, or check that the reward "
            f"can tell responses apart (tasks too easy or too hard for the policy give equal rewards).")
      seed = self.seed_for(self.num_gen_batches)
      groups = list(generate(self.gen_batch_size, seed))
      self.num_gen_batches += 1
      gen_batches += 1
      if not groups:
        raise ValueError(f"generate({self.gen_batch_size}, {seed}) returned no groups (out of prompts?)")
      for group in groups:
        if group.size != self.group_size:
          raise ValueError(f"generate returned a group of {group.size} responses; group_size is {self.group_size}")
      generated += len(groups)
      for group in groups:
        if self.keeps(group):
          kept.append(group)
        else:
          discarded += 1
    self.num_groups_generated += generated
    self.num_groups_discarded += discarded
    self.num_steps += 1
    batch = SampledBatch(groups=tuple(kept[:self.train_batch_size]), gen_batches=gen_batches,
                         groups_generated=generated, groups_discarded=discarded,
                         groups_surplus=len(kept) - self.train_batch_size)
    logger.debug("dynamic sampling: %d generation batches, %d of %d groups discarded", gen_batches, discarded,
                 generated)
    return batch

  def state_dict(self) -> dict[str, int]:
    """The counters a checkpoint must keep for an exact resume (seeds derive from them)."""
    return {"seed": self.seed, "num_gen_batches": self.num_gen_batches,
            "num_groups_generated": self.num_groups_generated, "num_groups_discarded": self.num_groups_discarded,
            "num_steps": self.num_steps}

  def load_state_dict(self, state: Mapping[str, int]) -> None:
    """Restores `state_dict`'s counters.

    Raises:
      ValueError: The state was saved with another seed.
    """
    if int(state["seed"]) != self.seed:
      raise ValueError(f"the sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
    self.num_gen_batches = int(state["num_gen_batches"])
    self.num_groups_generated = int(state["num_groups_generated"])
    self.num_groups_discarded = int(state["num_groups_discarded"])
    self.num_steps = int(state["num_steps"])


__all__ = ["DynamicSampler", "DynamicSamplingError", "GenerateFn", "Group", "SampledBatch"]
