"""The input pipeline in T5X's terms: a `DatasetConfig` in, per-host batches out.

Deterministic and resumable: the same config and seed give the same batches,
and `start_step=N` yields exactly the batches an uninterrupted run yields from
step N on (the pipeline is replayed and the first N batches are dropped; every
example is a pure function of the seed and its source record, so the replay is
exact). Each host reads its own shard (`seqio.ShardInfo(index, num_shards)`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Mapping

import seqio
import tensorflow as tf

from masksearch_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """What to read, as T5X's DatasetConfig.

  Attributes:
    mixture_or_task_name: A registered SeqIO task or mixture.
    task_feature_lengths: Lengths of the task features, e.g. {'inputs': 256, 'targets': 256}.
    split: 'train', 'validation' or 'test'.
    batch_size: The global batch size (across all hosts).
    shuffle: Shuffle examples (seeded).
    seed: Seed of the shuffle and mixture sampling; None is not deterministic.
    use_cached: Read a SeqIO cache made by seqio's cache_tasks_main.
    pack: Pack several examples into each row (see AgentLMFeatureConverter).
    module: Module imported first so its tasks are registered (default 'tasks').
  """

  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str = "train"
  batch_size: int = 8
  shuffle: bool = True
  seed: int | None = 0
  use_cached: bool = False
  pack: bool = False
  module: str | None = "tasks"


def provider(cfg: DatasetConfig) -> seqio.DatasetProviderBase:
  """The registered task or mixture `cfg` names (importing `cfg.module` first)."""
  if cfg.module:
    importlib.import_module(cfg.module)
  return _provider(cfg.mixture_or_task_name)


def _provider(name: str) -> seqio.DatasetProviderBase:
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  known = sorted(seqio.TaskRegistry.names()) + sorted(seqio.MixtureRegistry.names())
  raise ConfigError(f"no SeqIO task or mixture named {name!r}; registered: {', '.join(known)}")


def get_dataset(cfg: DatasetConfig, *, shard_id: int = 0, num_shards: int = 1,
                feature_converter: seqio.FeatureConverter | None = None, num_epochs: int | None = None,
                start_step: int = 0) -> tf.data.Dataset:
  """Per-host batches of model features for `cfg`.

  Args:
    cfg: What to read.
    shard_id: This host's index (jax.process_index()).
    num_shards: Number of hosts (jax.process_count()).
    feature_converter: Turns task features into model features; default
      `AgentLMFeatureConverter(pack=cfg.pack)`.
    num_epochs: Passes over the data; None repeats forever (training).
    start_step: Batches to skip, to resume a run at that step.

  Returns:
    A dataset of dicts of [batch_size // num_shards, length] arrays.
  """
  if cfg.batch_size % num_shards:
    raise ValueError(f"batch_size {cfg.batch_size} does not divide among {num_shards} hosts")
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"shard_id {shard_id} is not in [0, {num_shards})")
  if feature_converter is None:
    from masksearch_jax.data.feature_converters import AgentLMFeatureConverter
    feature_converter = AgentLMFeatureConverter(pack=cfg.pack)
  ds = seqio.get_dataset(provider(cfg), task_feature_lengths=dict(cfg.task_feature_lengths),
                         feature_converter=feature_converter, dataset_split=cfg.split, use_cached=cfg.use_cached,
                         shuffle=cfg.shuffle, num_epochs=num_epochs,
                         shard_info=seqio.ShardInfo(shard_id, num_shards), verbose=False, seed=cfg.seed)
  ds = ds.batch(cfg.batch_size // num_shards, drop_remainder=True)
  if start_step:
    ds = ds.skip(start_step)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)

