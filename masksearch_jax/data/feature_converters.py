"""The project's own feature converter for decoder-only training on agent trajectories.

seqio's `LMFeatureConverter` trains on every token and `PrefixLMFeatureConverter` only tells
the prompt from the rest. Search-agent data needs a weight per token: the prompt and every
retrieved observation (`<information>` blocks, tool messages) are read but not learnt, the
model's own tokens are. `AgentLMFeatureConverter` takes that weight from the task feature
"targets_loss_weights" (as `trajectories.trajectory_features` makes it).

    task features                                  model features
    inputs   [7, 8]          (optional: prompt)    decoder_target_tokens [7, 8, 3, 9, 1, 0]
    targets  [3, 9, 1]                        ->   decoder_input_tokens  [0, 7, 8, 3, 9, 0]
    targets_loss_weights [1, 0, 1] (optional)      decoder_loss_weights  [0, 0, 1, 0, 1, 0]

With packing, several examples share a row and `decoder_segment_ids` (1, 2, ...; 0 on
padding) and `decoder_positions` (restarting at 0 for each example) say which is which;
`attention_mask_from_segments` turns the segment ids into the attention mask that keeps the
examples apart.
"""

from __future__ import annotations

import copy
from typing import Mapping

import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf

_Spec = seqio.FeatureConverter.FeatureSpec

_WEIGHT_DTYPES = (tf.int32, tf.float32)

# Names of the two sequences packed or padded inside the converter.
_TOKENS = "targets"
_WEIGHT_BITS = "loss_weight_bits"


class AgentLMFeatureConverter(seqio.FeatureConverter):
  """Decoder-only features with a loss weight per token: zero on the prompt and observations.

  Task features:
    inputs: optional int32, the prompt; every token gets loss weight 0. It is optional per
      call: give an "inputs" length in `task_feature_lengths` exactly when the dataset has it.
    targets: int32, the response (model and observation tokens, in order). Any EOS must
      already be there: `trajectory_features` puts one after episodes the policy ended, or
      the task registers "targets" with `add_eos=True`.
    targets_loss_weights: optional int32 or float32, aligned with "targets": 1 on model
      tokens, 0 on observation tokens (any other value is kept as a weight). Without it every
      target token has weight 1. It needs no entry in `task_feature_lengths` (its length is
      the targets'), but may have one. If it is longer than "targets" (trimmed by the task) it
      is cut to match; if shorter, the extra target tokens at the end (an EOS appended by
      `append_eos_after_trim`) get weight 1.

  Model features (length = inputs length + targets length):
    decoder_target_tokens: inputs ++ targets, then padding (0).
    decoder_input_tokens: decoder_target_tokens shifted right by one within each example,
      starting with `bos_id`; never carries a token across an example boundary, and is 0 on
      padding (unlike seqio's LMFeatureConverter, whose unpacked padding repeats the last
      token).
    decoder_loss_weights: 0 on inputs, targets_loss_weights on targets, 0 on padding, in
      `loss_weights_dtype`.
    decoder_segment_ids, decoder_positions: with `pack=True` only; 1, 2, ... per example in
      a row (0 on padding) and the position within the example (restarting at 0).

  Packing is seqio's `trim_and_pack_dataset` (greedy, in order).
  """

  TASK_FEATURES = {
      "inputs": _Spec(dtype=tf.int32),
      "targets": _Spec(dtype=tf.int32),
      "targets_loss_weights": _Spec(dtype=tf.int32),
  }
  MODEL_FEATURES = {
      "decoder_target_tokens": _Spec(dtype=tf.int32),
      "decoder_input_tokens": _Spec(dtype=tf.int32),
      "decoder_loss_weights": _Spec(dtype=tf.float32),
  }
  PACKING_FEATURE_DTYPES = {
      "decoder_segment_ids": tf.int32,
      "decoder_positions": tf.int32,
  }

  def __init__(self, pack: bool = True, use_custom_packing_ops: bool = False,
               apply_length_check: bool = True, bos_id: int = 0,
               loss_weights_dtype: tf.dtypes.DType = tf.float32):
    """Configures the converter.

    Args:
      pack: Pack several examples into each row (adds decoder_segment_ids and
        decoder_positions).
      use_custom_packing_ops: Use tensor2tensor's packing ops (need a custom build).
      apply_length_check: Check lengths before and after conversion (seqio's checks).
      bos_id: The first decoder input token of every example.
      loss_weights_dtype: dtype of decoder_loss_weights, tf.float32 (default) or tf.int32
        (as seqio's LMFeatureConverter; fractional weights are then truncated).
    """
    loss_weights_dtype = tf.as_dtype(loss_weights_dtype)
    if loss_weights_dtype not in _WEIGHT_DTYPES:
      raise ValueError(f"loss_weights_dtype must be int32 or float32, got {loss_weights_dtype.name}")
    self._loss_weights_dtype = loss_weights_dtype
    self.MODEL_FEATURES = dict(type(self).MODEL_FEATURES)
    self.MODEL_FEATURES["decoder_loss_weights"] = _Spec(dtype=loss_weights_dtype)
    super().__init__(pack=pack, use_custom_packing_ops=use_custom_packing_ops,
                     apply_length_check=apply_length_check, bos_id=bos_id)

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """Converts `ds`; see the class docstring.

    seqio's `__call__` wants TASK_FEATURES to match `task_feature_lengths` exactly, so the
    checks run on a copy of this converter whose TASK_FEATURES are the features this call has.

    Args:
      ds: Examples with the task features.
      task_feature_lengths: "targets" and, if the examples have a prompt, "inputs" (and
        optionally "targets_loss_weights").

    Returns:
      The dataset of model features.

    Raises:
      ValueError: A feature is missing from `ds` or from `task_feature_lengths`, or has the
        wrong dtype.
    """
    spec = ds.element_spec
    if "inputs" in spec and "inputs" not in task_feature_lengths:
      raise ValueError("the dataset has 'inputs' (the prompt) but task_feature_lengths has no "
                       "'inputs' length; give one, or drop the feature")
    features = {"targets": self.TASK_FEATURES["targets"]}
    if "inputs" in task_feature_lengths:
      features["inputs"] = self.TASK_FEATURES["inputs"]
    if "targets_loss_weights" in spec:
      dtype = spec["targets_loss_weights"].dtype
      if dtype not in _WEIGHT_DTYPES:
        raise ValueError(f"'targets_loss_weights' must be int32 or float32, got {dtype.name}")
      if "targets_loss_weights" in task_feature_lengths:
        features["targets_loss_weights"] = _Spec(dtype=dtype)
    elif "targets_loss_weights" in task_feature_lengths:
      features["targets_loss_weights"] = self.TASK_FEATURES["targets_loss_weights"]
    view = copy.copy(self)
    view.TASK_FEATURES = features
    return super(AgentLMFeatureConverter, view).__call__(ds, task_feature_lengths)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """Concatenates prompt and response, packs or pads, and derives the model features."""
    length = self._decoder_length(task_feature_lengths)
    has_inputs = "inputs" in task_feature_lengths
    has_weights = "targets_loss_weights" in ds.element_spec

    def concatenate(ex):
      targets = ex["targets"]
      n = tf.size(targets)
      if has_weights:
        weights = tf.cast(ex["targets_loss_weights"], tf.float32)[:n]
        weights = tf.concat([weights, tf.ones([n - tf.size(weights)], tf.float32)], 0)
      else:
        weights = tf.ones([n], tf.float32)
      tokens = targets
      if has_inputs:
        tokens = tf.concat([ex["inputs"], targets], 0)
        weights = tf.concat([tf.zeros([tf.size(ex["inputs"])], tf.float32), weights], 0)
      # seqio's packer takes a feature's length to be its count of non-zero entries (0 is
      # padding), so a zero weight would shorten the weights and shift them against the
      # tokens. Zero is stored as -0.0, whose bits are non-zero, and the float's bits travel
      # as int32 (the packer handles int32 only).
      weights = tf.where(tf.equal(weights, 0.0), tf.fill(tf.shape(weights), -0.0), weights)
      return {_TOKENS: tokens, _WEIGHT_BITS: tf.bitcast(weights, tf.int32)}

    ds = ds.map(concatenate, num_parallel_calls=tf.data.AUTOTUNE)
    if self.pack:
      ds = _pack(ds, length)
    else:
      ds = self._pack_or_pad(ds, {_TOKENS: length, _WEIGHT_BITS: length})
    return ds.map(self._model_features, num_parallel_calls=tf.data.AUTOTUNE)

  def _model_features(self, ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    tokens = ex[_TOKENS]
    if self.pack:
      segment_ids = ex[_TOKENS + "_segment_ids"]
    else:
      segment_ids = tf.cast(tf.not_equal(tokens, 0), tf.int32)
    weights = tf.bitcast(ex[_WEIGHT_BITS], tf.float32)
    # Back from -0.0 to 0.0, and 0 wherever there is no token.
    weights = tf.where(tf.logical_and(tf.not_equal(weights, 0.0), tf.not_equal(segment_ids, 0)),
                       weights, tf.zeros_like(weights))
    features = {
        "decoder_target_tokens": tokens,
        # make_autoregressive_inputs starts padding like an example (with bos_id); zero it.
        "decoder_input_tokens": seqio.utils.make_autoregressive_inputs(
            tokens, sequence_id=segment_ids, bos_id=self.bos_id) * tf.sign(segment_ids),
        "decoder_loss_weights": tf.cast(weights, self._loss_weights_dtype),
    }
    if self.pack:
      features["decoder_segment_ids"] = segment_ids
      features["decoder_positions"] = ex[_TOKENS + "_positions"]
    return features

  @staticmethod
  def _decoder_length(task_feature_lengths: Mapping[str, int]) -> int:
    return task_feature_lengths["targets"] + task_feature_lengths.get("inputs", 0)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    """Every model feature is `inputs + targets` long ("targets" alone without a prompt).

    Args:
      task_feature_lengths: The task feature lengths ("targets", optional "inputs").

    Returns:
      The length of each model feature.
    """
    length = self._decoder_length(task_feature_lengths)
    lengths = {k: length for k in self.MODEL_FEATURES}
    if self.pack:
      lengths.update({k: length for k in self.PACKING_FEATURE_DTYPES})
    return lengths


# Examples packed together at a time. Rows are filled in order within a window, so a
# larger window wastes less of the last row and costs a little more latency.
_PACK_WINDOW = 256


def _pack_rows(tokens: np.ndarray, bits: np.ndarray, row_lengths: np.ndarray, length: int):
  """Greedy in-order packing: each example goes into the current row if it fits, else a new one.

  Examples longer than `length` are cut to it. Returns tokens, weight bits, segment ids
  (1, 2, ... within a row; 0 on padding) and positions, each [rows, length].
  """
  starts = np.concatenate([[0], np.cumsum(row_lengths)])
  placements = []  # (row, column, example)
  row, column, segment = 0, 0, 0
  for i, n in enumerate(np.minimum(row_lengths, length)):
    if column + n > length:
      row, column, segment = row + 1, 0, 0
    placements.append((row, column, i, n, segment + 1))
    column += n
    segment += 1
  rows = row + 1 if placements else 0
  out_tokens = np.zeros((rows, length), np.int32)
  out_bits = np.zeros((rows, length), np.int32)
  out_segments = np.zeros((rows, length), np.int32)
  out_positions = np.zeros((rows, length), np.int32)
  for row, column, i, n, segment in placements:
    start = starts[i]
    out_tokens[row, column:column + n] = tokens[start:start + n]
    out_bits[row, column:column + n] = bits[start:start + n]
    out_segments[row, column:column + n] = segment
    out_positions[row, column:column + n] = np.arange(n, dtype=np.int32)
  return out_tokens, out_bits, out_segments, out_positions


def _pack(ds: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Packs examples into rows of `length`, with segment ids and positions.

  seqio's graph-mode packer (without tensor2tensor's custom ops, which are not
  installable here) handled about 1,100 examples/s on one core, slower than the
  rest of the RAMP pipeline together; packing a window of examples in NumPy is
  not measurable next to it.
  """
  def pack_window(batch):
    outputs = tf.numpy_function(
        lambda t, b, r: _pack_rows(t, b, r, length),
        [batch[_TOKENS].flat_values, batch[_WEIGHT_BITS].flat_values, batch[_TOKENS].row_lengths()],
        [tf.int32] * 4, stateful=False)
    for tensor in outputs:
      tensor.set_shape([None, length])
    return {_TOKENS: outputs[0], _WEIGHT_BITS: outputs[1], _TOKENS + "_segment_ids": outputs[2],
            _TOKENS + "_positions": outputs[3]}

  return ds.ragged_batch(_PACK_WINDOW).map(pack_window).unbatch()


def attention_mask_from_segments(segment_ids) -> jnp.ndarray:
  """The decoder's self-attention mask: causal, within one example, none on padding.

  Position q may attend to position k when k <= q and both belong to the same example
  (`segment_ids[q] == segment_ids[k] != 0`). A padding position (segment 0) attends to
  nothing; its row is all False, so a model should mask with a large negative bias rather
  than -inf (a softmax over only -inf is NaN), and ignore those outputs.

  For an unpacked batch, pass `(decoder_target_tokens != 0)` as the segment ids.

  Args:
    segment_ids: int [batch, length]: `decoder_segment_ids`.

  Returns:
    bool [batch, 1, length (queries), length (keys)], broadcastable over heads.
  """
  segment_ids = jnp.asarray(segment_ids)
  if segment_ids.ndim != 2:
    raise ValueError(f"segment_ids must be [batch, length], got shape {segment_ids.shape}")
  query = segment_ids[:, :, None]
  key = segment_ids[:, None, :]
  length = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((length, length), dtype=bool))
  mask = (query == key) & (query != 0) & causal[None]
  return mask[:, None]


__all__ = ["AgentLMFeatureConverter", "attention_mask_from_segments"]
