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
from typing import Mapping, Sequence

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
    length_buckets: Batch examples of similar length together, as [(row_length, rows), ...]
      with increasing row lengths shorter than the full row: an example goes to the shortest
      bucket it fits in (its padding cut to that length) and waits there until `rows` such
      examples make a batch; longer examples make full-length batches of `batch_size` rows.
      Attention costs grow with the row's length, so rows of trajectories about half the
      full length train about twice as fast when bucketed. Keep rows x row_length near
      batch_size x full length so every batch holds about the same tokens, and each `rows`
      divisible like `batch_size` (by data parallelism and gradient accumulation; the trainer
      checks). One host only: hosts would disagree on a step's shapes. Empty: no buckets.
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
  length_buckets: Sequence[tuple[int, int]] = ()


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
  buckets = batch_shapes(cfg)
  if len(buckets) > 1 and num_shards > 1:
    raise ConfigError(f"DatasetConfig.length_buckets needs one host, not {num_shards}: hosts would batch "
                      f"different buckets at the same step")
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
  if len(buckets) > 1:
    ds = _bucketed(ds, buckets)
  else:
    ds = ds.batch(cfg.batch_size // num_shards, drop_remainder=True)
  if start_step:
    ds = ds.skip(start_step)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def batch_shapes(cfg: DatasetConfig) -> list[tuple[int, int]]:
  """The (row length, rows) of every batch shape `cfg` yields, shortest rows first.

  Raises:
    ConfigError: `length_buckets` is not increasing, not shorter than the full row, or has
      a bucket of no rows.
  """
  full = sum(cfg.task_feature_lengths.values())
  buckets = [(int(length), int(rows)) for length, rows in cfg.length_buckets]
  for i, (length, rows) in enumerate(buckets):
    if not 0 < length < full:
      raise ConfigError(f"DatasetConfig.length_buckets[{i}]: row length {length} is not in (0, {full}), "
                        f"the full row's length")
    if i and length <= buckets[i - 1][0]:
      raise ConfigError(f"DatasetConfig.length_buckets[{i}]: row lengths must increase ({buckets[i - 1][0]} "
                        f"then {length})")
    if rows < 1:
      raise ConfigError(f"DatasetConfig.length_buckets[{i}]: {rows} rows; a bucket needs at least one")
  return buckets + [(full, cfg.batch_size)]


def _bucketed(ds: tf.data.Dataset, buckets: Sequence[tuple[int, int]]) -> tf.data.Dataset:
  """Full-length examples cut to their bucket's length and batched with their bucket."""
  lengths = tf.constant([length for length, _ in buckets], tf.int32)
  full = ds.element_spec["decoder_target_tokens"].shape[-1]
  if full != buckets[-1][0]:
    raise ConfigError(f"DatasetConfig.length_buckets: the feature converter's rows are {full} tokens, not the "
                      f"task feature lengths' sum {buckets[-1][0]}")

  def cut(ex):
    # The row's last token with a segment, a non-zero id or a loss weight. (A vocabulary's id 0 may be a
    # real token; cutting trailing ones of weight 0 changes no loss, as attention is causal.)
    real = tf.not_equal(ex["decoder_target_tokens"], 0) | tf.not_equal(ex["decoder_loss_weights"], 0)
    if "decoder_segment_ids" in ex:
      real |= tf.not_equal(ex["decoder_segment_ids"], 0)
    used = tf.reduce_max(tf.cast(real, tf.int32) * tf.range(1, full + 1))
    length = tf.gather(lengths, tf.searchsorted(lengths, used[None], side="left")[0])
    return {k: v[:length] for k, v in ex.items()}

  ds = ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)
  # Bucket i holds lengths in [boundary[i - 1], boundary[i]); each is padded to boundary - 1, the
  # bucket's row length. No example reaches the extra bucket after the last boundary.
  return ds.bucket_by_sequence_length(
      lambda ex: tf.shape(ex["decoder_target_tokens"])[0], [length + 1 for length, _ in buckets],
      [rows for _, rows in buckets] + [1], pad_to_bucket_boundary=True, drop_remainder=True)
