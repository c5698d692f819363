"""Tests of DAPO's dynamic sampling bookkeeping (masksearch_jax/rl/dynamic_sampling.py)."""

from __future__ import annotations

import gin
import numpy as np
import pytest

from masksearch_jax.rl.dynamic_sampling import DynamicSampler, DynamicSamplingError, Group

G = 4


class Script:
  """A `generate` that returns scripted reward rows, one generation batch per call.

  Each row is one group; prompts are numbered in the order they are generated.
  """

  def __init__(self, *batches):
    self.batches = list(batches)
    self.calls: list[tuple[int, int]] = []
    self.prompts = 0

  def __call__(self, num_prompts: int, seed: int) -> list[Group]:
    self.calls.append((num_prompts, seed))
    rows = self.batches.pop(0)
    groups = []
    for row in rows:
      groups.append(Group(prompt=self.prompts, responses=[f"p{self.prompts}r{i}" for i in range(len(row))],
                          rewards=row))
      self.prompts += 1
    return groups


MIXED = [1, 0, 0, 1]
ALL_ONE = [1, 1, 1, 1]
ALL_ZERO = [0, 0, 0, 0]


def test_groups_with_equal_rewards_are_dropped_and_the_batch_is_refilled():
  script = Script([MIXED, ALL_ONE, ALL_ZERO], [ALL_ZERO, [0.5, 0, 0, 0], ALL_ONE], [MIXED, MIXED, MIXED])
  sampler = DynamicSampler(train_batch_size=3, group_size=G, gen_batch_size=3)
  batch = sampler.sample(script)
  # Kept: prompt 0 (batch 1), prompt 4 (batch 2), prompt 6 (batch 3); prompts 7 and 8 are surplus.
  assert [g.prompt for g in batch.groups] == [0, 4, 6]
  assert (batch.gen_batches, batch.groups_generated, batch.groups_discarded, batch.groups_surplus) == (3, 9, 4, 2)
  assert batch.kept_share == pytest.approx(5 / 9)
  assert batch.metrics() == {"sampling/gen_batches": 3.0, "sampling/groups_generated": 9.0,
                             "sampling/groups_discarded": 4.0, "sampling/groups_surplus": 2.0,
                             "sampling/kept_share": pytest.approx(5 / 9)}
  assert [n for n, _ in script.calls] == [3, 3, 3]
  assert (sampler.num_gen_batches, sampler.num_groups_generated, sampler.num_groups_discarded,
          sampler.num_steps) == (3, 9, 4, 1)
  for group in batch.groups:
    assert group.rewards_differ() and group.responses[0] == f"p{group.prompt}r0"


def test_one_generation_batch_suffices_when_enough_groups_differ():
  script = Script([MIXED, ALL_ONE, MIXED, MIXED, [0, 0, 0, 0.25]])
  batch = DynamicSampler(train_batch_size=2, group_size=G, gen_batch_size=5).sample(script)
  assert [g.prompt for g in batch.groups] == [0, 2]
  assert (batch.gen_batches, batch.groups_discarded, batch.groups_surplus) == (1, 1, 2)


def test_the_error_names_the_limit_when_it_is_reached():
  script = Script([ALL_ONE, MIXED], [ALL_ZERO, ALL_ZERO], [MIXED, MIXED])
  sampler = DynamicSampler(train_batch_size=3, group_size=G, gen_batch_size=2, max_num_gen_batches=2)
  with pytest.raises(DynamicSamplingError, match=r"kept 1 of the 3 groups .* max_num_gen_batches=2 ") as error:
    sampler.sample(script)
  assert "(4 groups generated, 3 with all 4 rewards equal)" in str(error.value)
  assert "0 = unlimited" in str(error.value)
  assert len(script.calls) == 2  # Stopped at the limit; the third batch was never generated.


def test_zero_means_unlimited():
  script = Script(*([[ALL_ZERO]] * 40 + [[MIXED]]))
  batch = DynamicSampler(train_batch_size=1, group_size=G, gen_batch_size=1, max_num_gen_batches=0).sample(script)
  assert (batch.gen_batches, batch.groups_discarded, [g.prompt for g in batch.groups]) == (41, 40, [40])


def test_groups_of_one_and_unfiltered_sampling_keep_everything():
  script = Script([[1.0], [1.0], [0.0]])
  batch = DynamicSampler(train_batch_size=2, group_size=1, gen_batch_size=3).sample(script)
  assert ([g.prompt for g in batch.groups], batch.groups_discarded, batch.groups_surplus) == ([0, 1], 0, 1)
  script = Script([ALL_ONE, ALL_ZERO])
  batch = DynamicSampler(train_batch_size=2, group_size=G, filter_groups=False).sample(script)
  assert ([g.prompt for g in batch.groups], batch.groups_discarded) == ([0, 1], 0)


def test_rounding_is_not_a_difference():
  script = Script([[0.3, 0.1 + 0.2, 0.3, 0.3], MIXED])
  batch = DynamicSampler(train_batch_size=1, group_size=G, gen_batch_size=2).sample(script)
  assert [g.prompt for g in batch.groups] == [1] and batch.groups_discarded == 1


def test_each_generation_batch_has_its_own_seed_and_a_resumed_sampler_draws_the_same():
  def fresh_script():
    return Script(*([[MIXED, ALL_ONE]] * 6))

  uninterrupted, script = DynamicSampler(train_batch_size=2, group_size=G, gen_batch_size=2, seed=7), fresh_script()
  for _ in range(3):
    uninterrupted.sample(script)
  seeds = [s for _, s in script.calls]
  assert len(seeds) == 6 and len(set(seeds)) == 6
  assert seeds == [uninterrupted.seed_for(i) for i in range(6)]

  first, script_a = DynamicSampler(train_batch_size=2, group_size=G, gen_batch_size=2, seed=7), fresh_script()
  first.sample(script_a)
  state = first.state_dict()
  assert state == {"seed": 7, "num_gen_batches": 2, "num_groups_generated": 4, "num_groups_discarded": 2,
                   "num_steps": 1}
  resumed, script_b = DynamicSampler(train_batch_size=2, group_size=G, gen_batch_size=2, seed=7), fresh_script()
  resumed.load_state_dict(state)
  resumed.sample(script_b)
  resumed.sample(script_b)
  assert [s for _, s in script_a.calls + script_b.calls] == seeds
  assert resumed.state_dict() == uninterrupted.state_dict()
  other = DynamicSampler(train_batch_size=2, group_size=G, seed=8)
  assert other.seed_for(0) != uninterrupted.seed_for(0)
  with pytest.raises(ValueError, match="seed 7"):
    other.load_state_dict(state)


def test_a_seeded_generator_gives_the_same_batches_twice():
  def generate(num_prompts, seed):
    rng = np.random.default_rng(seed)
    return [Group(prompt=int(rng.integers(1000)), responses=range(G), rewards=rng.integers(0, 2, size=G))
            for _ in range(num_prompts)]

  runs = []
  for _ in range(2):
    sampler = DynamicSampler(train_batch_size=4, group_size=G, gen_batch_size=3, seed=3)
    runs.append([[g.prompt for g in sampler.sample(generate).groups] for _ in range(3)])
  assert runs[0] == runs[1]


def test_bad_groups_and_settings_are_refused():
  with pytest.raises(ValueError, match="3 responses but 2 rewards"):
    Group(prompt=0, responses=["a", "b", "c"], rewards=[1, 0])
  with pytest.raises(ValueError, match="group_size is 4"):
    DynamicSampler(train_batch_size=1, group_size=G).sample(Script([[1, 0]]))
  with pytest.raises(ValueError, match="no groups"):
    DynamicSampler(train_batch_size=1, group_size=G).sample(Script([]))
  for kwargs, match in (({"train_batch_size": 0}, "train_batch_size"), ({"group_size": 0}, "group_size"),
                        ({"gen_batch_size": 0}, "gen_batch_size"), ({"max_num_gen_batches": -1}, "max_num_gen"),
                        ({"reward_tolerance": -1.0}, "reward_tolerance")):
    with pytest.raises(ValueError, match=match):
      DynamicSampler(**{"train_batch_size": 1, "group_size": G, **kwargs})


def test_settings_from_gin():
  gin.clear_config()
  try:
    gin.parse_config("""
        import masksearch_jax.rl.dynamic_sampling
        masksearch_jax.rl.dynamic_sampling.DynamicSampler.train_batch_size = 2
        masksearch_jax.rl.dynamic_sampling.DynamicSampler.group_size = 4
        masksearch_jax.rl.dynamic_sampling.DynamicSampler.gen_batch_size = 6
        masksearch_jax.rl.dynamic_sampling.DynamicSampler.max_num_gen_batches = 3
    """)
    sampler = DynamicSampler()
  finally:
    gin.clear_config()
  assert (sampler.train_batch_size, sampler.group_size, sampler.gen_batch_size, sampler.max_num_gen_batches) == (
      2, 4, 6, 3)
