"""Tests of masksearch_jax.data.input_pipeline: deterministic, resumable, per-host input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from masksearch_jax.data import input_pipeline

LENGTHS = {"inputs": 288, "targets": 160}


def _batches(cfg, n, **kwargs):
  return list(itertools.islice(input_pipeline.get_dataset(cfg, **kwargs).as_numpy_iterator(), n))


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def config():
  return input_pipeline.DatasetConfig("ramp_curriculum_stage2", LENGTHS, batch_size=4, shuffle=True, seed=7,
                                      pack=True)


def test_same_seed_same_batches_other_seed_other_batches(tiny_tasks, config):
  first, again = _batches(config, 4), _batches(config, 4)
  assert all(_same(a, b) for a, b in zip(first, again))
  other = _batches(input_pipeline.DatasetConfig(**{**config.__dict__, "seed": 8}), 4)
  assert not all(_same(a, b) for a, b in zip(first, other))
  assert set(first[0]) == {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                           "decoder_segment_ids", "decoder_positions"}
  assert first[0]["decoder_target_tokens"].shape == (4, sum(LENGTHS.values()))


def test_restart_at_step_n_yields_the_uninterrupted_batches(tiny_tasks, config):
  uninterrupted = _batches(config, 7)
  resumed = _batches(config, 3, start_step=4)
  assert all(_same(a, b) for a, b in zip(uninterrupted[4:], resumed))


def test_each_host_reads_its_own_half(tiny_tasks):
  cfg = input_pipeline.DatasetConfig("ramp_mask1", LENGTHS, batch_size=8, shuffle=True, seed=1, pack=False)
  host = [_batches(cfg, 3, shard_id=i, num_shards=2) for i in range(2)]
  assert host[0][0]["decoder_target_tokens"].shape == (4, sum(LENGTHS.values()))
  rows = [{tuple(r) for b in batches for r in b["decoder_target_tokens"]} for batches in host]
  assert len(rows[0]) == len(rows[1]) == 12 and not rows[0] & rows[1]


def test_configuration_errors_are_clear(tiny_tasks):
  with pytest.raises(ValueError, match="no SeqIO task or mixture named 'ramp_mask9'.*ramp_mask1"):
    input_pipeline.get_dataset(input_pipeline.DatasetConfig("ramp_mask9", LENGTHS))
  with pytest.raises(ValueError, match="batch_size 6 does not divide among 4 hosts"):
    input_pipeline.get_dataset(input_pipeline.DatasetConfig("ramp_mask1", LENGTHS, batch_size=6), num_shards=4)


BUCKETS = ((160, 8), (288, 4))


def _used(row):
  return int(np.flatnonzero(row)[-1]) + 1 if row.any() else 0


def test_length_buckets_batch_each_example_in_the_shortest_row_it_fits(tiny_tasks):
  plain = input_pipeline.DatasetConfig("ramp_mask1", LENGTHS, batch_size=2, shuffle=True, seed=3, pack=False)
  bucketed = input_pipeline.DatasetConfig(**{**plain.__dict__, "length_buckets": BUCKETS})
  assert input_pipeline.batch_shapes(bucketed) == [(160, 8), (288, 4), (448, 2)]
  batches = _batches(bucketed, 10 ** 6, num_epochs=1)
  shapes = {b["decoder_target_tokens"].shape for b in batches}
  assert len(shapes) >= 2 and shapes <= {(8, 160), (4, 288), (2, 448)}
  rows = []
  for b in batches:
    assert {v.shape for v in b.values()} == {b["decoder_target_tokens"].shape}
    length = b["decoder_target_tokens"].shape[1]
    shorter = max([n for n, _ in BUCKETS if n < length], default=0)
    for i, row in enumerate(b["decoder_target_tokens"]):
      assert shorter < _used(row) <= length
      assert not b["decoder_loss_weights"][i, _used(row):].any()
      rows.append(tuple(row[:_used(row)]))
  # The same examples as unbucketed batches, less at most a partial batch per bucket.
  everything = [tuple(r[:_used(r)]) for b in _batches(plain, 10 ** 6, num_epochs=1) for r in b["decoder_target_tokens"]]
  assert set(rows) <= set(everything)
  assert len(everything) - len(rows) < 8 + 4 + 2


def test_length_buckets_resume_at_step_n(tiny_tasks):
  cfg = input_pipeline.DatasetConfig("ramp_curriculum_stage2", LENGTHS, batch_size=2, shuffle=True, seed=5,
                                     pack=False, length_buckets=BUCKETS)
  uninterrupted = _batches(cfg, 9)
  resumed = _batches(cfg, 4, start_step=5)
  assert len({b["decoder_target_tokens"].shape for b in uninterrupted}) >= 2
  assert all(_same(a, b) for a, b in zip(uninterrupted[5:], resumed))


@pytest.mark.parametrize("buckets, message", [
    (((288, 4), (160, 8)), r"length_buckets\[1\]: row lengths must increase \(288 then 160\)"),
    (((448, 2),), r"length_buckets\[0\]: row length 448 is not in \(0, 448\)"),
    (((160, 0),), r"length_buckets\[0\]: 0 rows"),
])
def test_length_bucket_errors_name_the_bucket(tiny_tasks, buckets, message):
  with pytest.raises(ValueError, match=message):
    input_pipeline.get_dataset(input_pipeline.DatasetConfig("ramp_mask1", LENGTHS, length_buckets=buckets))


def test_length_buckets_need_one_host(tiny_tasks):
  cfg = input_pipeline.DatasetConfig("ramp_mask1", LENGTHS, batch_size=4, length_buckets=BUCKETS)
  with pytest.raises(ValueError, match="length_buckets needs one host, not 2"):
    input_pipeline.get_dataset(cfg, num_shards=2)
