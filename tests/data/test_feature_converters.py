"""Tests of masksearch_jax.data.feature_converters: exact features, packing, no cross-attention."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from masksearch_jax.agent import protocol
from masksearch_jax.data import trajectories as tj
from masksearch_jax.data.feature_converters import AgentLMFeatureConverter, attention_mask_from_segments
from masksearch_jax.data.trajectories import Segment, Trajectory

# Three tiny examples: prompt, response, 1 on model tokens and 0 on observation tokens.
EXAMPLES = [
    {"inputs": [7, 8], "targets": [3, 9, 1], "targets_loss_weights": [1, 0, 1]},
    {"inputs": [5], "targets": [4, 1], "targets_loss_weights": [1, 1]},
    {"inputs": [6, 2], "targets": [5, 1], "targets_loss_weights": [0, 1]},
]
LENGTHS = {"inputs": 4, "targets": 6}


def _dataset(examples, dtypes=None) -> tf.data.Dataset:
  dtypes = dtypes or {}
  keys = list(examples[0])

  def generate():
    for ex in examples:
      yield {k: np.asarray(ex[k], dtype=dtypes.get(k, np.int32)) for k in keys}

  signature = {k: tf.TensorSpec([None], tf.as_dtype(dtypes.get(k, np.int32))) for k in keys}
  return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _rows(ds) -> list[dict[str, np.ndarray]]:
  return list(ds.as_numpy_iterator())


def _assert_rows(rows, expected):
  assert len(rows) == len(expected)
  for row, want in zip(rows, expected):
    assert set(row) == set(want)
    for k, v in want.items():
      np.testing.assert_array_equal(row[k], np.asarray(v), err_msg=k)


def test_unpacked_features_by_hand():
  rows = _rows(AgentLMFeatureConverter(pack=False)(_dataset(EXAMPLES), LENGTHS))
  _assert_rows(rows, [
      {"decoder_target_tokens": [7, 8, 3, 9, 1, 0, 0, 0, 0, 0],
       "decoder_input_tokens": [0, 7, 8, 3, 9, 0, 0, 0, 0, 0],
       "decoder_loss_weights": [0, 0, 1, 0, 1, 0, 0, 0, 0, 0]},
      {"decoder_target_tokens": [5, 4, 1, 0, 0, 0, 0, 0, 0, 0],
       "decoder_input_tokens": [0, 5, 4, 0, 0, 0, 0, 0, 0, 0],
       "decoder_loss_weights": [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]},
      {"decoder_target_tokens": [6, 2, 5, 1, 0, 0, 0, 0, 0, 0],
       "decoder_input_tokens": [0, 6, 2, 5, 0, 0, 0, 0, 0, 0],
       "decoder_loss_weights": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]},
  ])
  assert rows[0]["decoder_loss_weights"].dtype == np.float32


def test_packed_features_by_hand():
  rows = _rows(AgentLMFeatureConverter(pack=True)(_dataset(EXAMPLES), LENGTHS))
  # The first two (5 + 3 tokens) share a row of 10; the third (4) no longer fits.
  _assert_rows(rows, [
      {"decoder_target_tokens": [7, 8, 3, 9, 1, 5, 4, 1, 0, 0],
       "decoder_input_tokens": [0, 7, 8, 3, 9, 0, 5, 4, 0, 0],
       "decoder_loss_weights": [0, 0, 1, 0, 1, 0, 1, 1, 0, 0],
       "decoder_segment_ids": [1, 1, 1, 1, 1, 2, 2, 2, 0, 0],
       "decoder_positions": [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]},
      {"decoder_target_tokens": [6, 2, 5, 1, 0, 0, 0, 0, 0, 0],
       "decoder_input_tokens": [0, 6, 2, 5, 0, 0, 0, 0, 0, 0],
       "decoder_loss_weights": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
       "decoder_segment_ids": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
       "decoder_positions": [0, 1, 2, 3, 0, 0, 0, 0, 0, 0]},
  ])


def test_targets_only_without_weights_is_plain_lm():
  examples = [{"targets": [3, 9, 1]}, {"targets": [4, 1]}]
  rows = _rows(AgentLMFeatureConverter(pack=True, bos_id=2)(_dataset(examples), {"targets": 6}))
  _assert_rows(rows, [
      {"decoder_target_tokens": [3, 9, 1, 4, 1, 0],
       "decoder_input_tokens": [2, 3, 9, 2, 4, 0],
       "decoder_loss_weights": [1, 1, 1, 1, 1, 0],
       "decoder_segment_ids": [1, 1, 1, 2, 2, 0],
       "decoder_positions": [0, 1, 2, 0, 1, 0]},
  ])


def test_weights_longer_are_cut_shorter_are_extended_with_ones_and_fractions_survive_packing():
  examples = [
      {"inputs": [7], "targets": [3, 9, 1], "targets_loss_weights": [0.5, 0.0, 0.25, 9.0, 9.0]},
      {"inputs": [5, 6], "targets": [4, 8, 1], "targets_loss_weights": [0.0, 0.75]},  # EOS added later
  ]
  rows = _rows(AgentLMFeatureConverter(pack=True)(_dataset(examples, {"targets_loss_weights": np.float32}),
                                                  {"inputs": 2, "targets": 4}))
  _assert_rows(rows, [
      {"decoder_target_tokens": [7, 3, 9, 1, 0, 0],
       "decoder_input_tokens": [0, 7, 3, 9, 0, 0],
       "decoder_loss_weights": [0, 0.5, 0, 0.25, 0, 0],
       "decoder_segment_ids": [1, 1, 1, 1, 0, 0],
       "decoder_positions": [0, 1, 2, 3, 0, 0]},
      {"decoder_target_tokens": [5, 6, 4, 8, 1, 0],
       "decoder_input_tokens": [0, 5, 6, 4, 8, 0],
       "decoder_loss_weights": [0, 0, 0, 0.75, 1, 0],
       "decoder_segment_ids": [1, 1, 1, 1, 1, 0],
       "decoder_positions": [0, 1, 2, 3, 4, 0]},
  ])


def test_int32_loss_weights_and_a_weights_length_are_accepted():
  converter = AgentLMFeatureConverter(pack=False, loss_weights_dtype=tf.int32)
  lengths = dict(LENGTHS, targets_loss_weights=6)
  rows = _rows(converter(_dataset(EXAMPLES), lengths))
  assert rows[0]["decoder_loss_weights"].dtype == np.int32
  np.testing.assert_array_equal(rows[0]["decoder_loss_weights"], [0, 0, 1, 0, 1, 0, 0, 0, 0, 0])
  assert converter.get_model_feature_lengths(lengths)["decoder_target_tokens"] == 10


def test_model_feature_lengths():
  assert AgentLMFeatureConverter(pack=True).get_model_feature_lengths(LENGTHS) == {
      k: 10 for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                      "decoder_segment_ids", "decoder_positions")}
  assert AgentLMFeatureConverter(pack=False).get_model_feature_lengths({"targets": 7}) == {
      k: 7 for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights")}


def test_misconfiguration_is_reported():
  with pytest.raises(ValueError, match="no 'inputs' length"):
    AgentLMFeatureConverter()(_dataset(EXAMPLES), {"targets": 6})
  with pytest.raises(ValueError, match="must be int32 or float32, got int64"):
    AgentLMFeatureConverter()(_dataset(EXAMPLES, {"targets_loss_weights": np.int64}), LENGTHS)
  with pytest.raises(ValueError, match="missing an expected feature"):
    AgentLMFeatureConverter()(_dataset([{"targets": [3, 1]}]), LENGTHS)
  with pytest.raises(ValueError, match="loss_weights_dtype"):
    AgentLMFeatureConverter(loss_weights_dtype=tf.int64)
  with pytest.raises(tf.errors.InvalidArgumentError):
    _rows(AgentLMFeatureConverter()(_dataset(EXAMPLES), {"inputs": 4, "targets": 2}))


# ---------------------------------------------------------------------------------------------
# Packing at scale: nothing crosses between examples.


def _random_examples(n: int, seed: int = 0):
  rng = random.Random(seed)
  examples = []
  for _ in range(n):
    prompt = [rng.randint(3, 99) for _ in range(rng.randint(0, 6))]
    response = [rng.randint(3, 99) for _ in range(rng.randint(1, 9))]
    weights = [rng.choice([0, 1]) for _ in response]
    examples.append({"inputs": prompt, "targets": response, "targets_loss_weights": weights})
  return examples


def _unpack(rows):
  """The examples in packed rows, in order, as (tokens, inputs, weights, positions)."""
  found = []
  for row in rows:
    seg = row["decoder_segment_ids"]
    assert np.all(np.diff(seg[seg > 0]) >= 0)  # segments are contiguous and increasing
    for s in range(1, seg.max() + 1):
      at = seg == s
      found.append(tuple(row[k][at] for k in ("decoder_target_tokens", "decoder_input_tokens",
                                                 "decoder_loss_weights", "decoder_positions")))
    pad = seg == 0
    assert not row["decoder_target_tokens"][pad].any()
    assert not row["decoder_input_tokens"][pad].any()
    assert not row["decoder_loss_weights"][pad].any()
  return found


def test_packing_keeps_every_example_whole_and_apart():
  examples = _random_examples(200)
  rows = _rows(AgentLMFeatureConverter(pack=True)(_dataset(examples), {"inputs": 12, "targets": 20}))
  assert len(rows) < len(examples) / 2
  assert max(row["decoder_segment_ids"].max() for row in rows) >= 3
  unpacked = _unpack(rows)
  assert len(unpacked) == len(examples)
  for ex, (tokens, inputs, weights, positions) in zip(examples, unpacked):
    np.testing.assert_array_equal(tokens, ex["inputs"] + ex["targets"])
    np.testing.assert_array_equal(inputs, [0] + (ex["inputs"] + ex["targets"])[:-1])
    np.testing.assert_array_equal(weights, [0] * len(ex["inputs"]) + ex["targets_loss_weights"])
    np.testing.assert_array_equal(positions, np.arange(len(tokens)))


def test_attention_mask_never_crosses_examples():
  segment_ids = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  mask = np.asarray(attention_mask_from_segments(segment_ids))
  assert mask.shape == (2, 1, 8, 8) and mask.dtype == bool
  for b in range(2):
    for q in range(8):
      for k in range(8):
        want = k <= q and segment_ids[b, q] == segment_ids[b, k] != 0
        assert mask[b, 0, q, k] == want, (b, q, k)
  with pytest.raises(ValueError, match="batch, length"):
    attention_mask_from_segments(np.zeros(4, np.int32))


def _attention_outputs(tokens, positions, mask, params):
  """One self-attention layer with position embeddings, two heads; padding rows are ignored."""
  x = params["embed"][tokens] + params["pos"][positions]
  q = jnp.einsum("bld,dhk->bhlk", x, params["q"])
  k = jnp.einsum("bld,dhk->bhlk", x, params["k"])
  v = jnp.einsum("bld,dhk->bhlk", x, params["v"])
  logits = jnp.einsum("bhqk,bhsk->bhqs", q, k) / jnp.sqrt(q.shape[-1])
  logits = jnp.where(mask, logits, -1e9)
  out = jnp.einsum("bhqs,bhsk->bhqk", jax.nn.softmax(logits, axis=-1), v)
  return jnp.einsum("bhlk,hkd->bld", out, params["o"]) + x


def test_packed_attention_equals_unpacked_attention():
  examples = _random_examples(40, seed=1)
  lengths = {"inputs": 6, "targets": 10}
  packed = _rows(AgentLMFeatureConverter(pack=True)(_dataset(examples), lengths))
  single = _rows(AgentLMFeatureConverter(pack=False)(_dataset(examples), lengths))
  assert any(row["decoder_segment_ids"].max() > 1 for row in packed)

  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  d, heads, kd = 16, 2, 8
  params = {"embed": jax.random.normal(keys[0], (100, d)), "pos": jax.random.normal(keys[1], (16, d)),
            "q": jax.random.normal(keys[2], (d, heads, kd)), "k": jax.random.normal(keys[3], (d, heads, kd)),
            "v": jax.random.normal(keys[4], (d, heads, kd)), "o": jax.random.normal(keys[5], (heads, kd, d))}

  def stack(rows, key):
    return jnp.asarray(np.stack([r[key] for r in rows]))

  seg = stack(packed, "decoder_segment_ids")
  packed_out = _attention_outputs(stack(packed, "decoder_input_tokens"), stack(packed, "decoder_positions"),
                                  attention_mask_from_segments(seg), params)
  single_tokens = stack(single, "decoder_target_tokens")
  single_out = _attention_outputs(stack(single, "decoder_input_tokens"),
                                  jnp.broadcast_to(jnp.arange(16), single_tokens.shape),
                                  attention_mask_from_segments((single_tokens != 0).astype(jnp.int32)), params)

  def per_example(out, seg_ids):
    out, seg_ids = np.asarray(out), np.asarray(seg_ids)
    return [out[r][seg_ids[r] == s] for r in range(len(out)) for s in range(1, seg_ids[r].max() + 1)]

  from_packed = per_example(packed_out, seg)
  from_single = per_example(single_out, single_tokens != 0)
  assert len(from_packed) == len(from_single) == len(examples)
  for a, b in zip(from_packed, from_single):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

  # The check can fail: a causal mask that ignores segments lets packed examples see each other.
  leaky = jnp.tril(jnp.ones((16, 16), bool))[None, None] & (seg != 0)[:, None, :, None]
  leaky_out = _attention_outputs(stack(packed, "decoder_input_tokens"), stack(packed, "decoder_positions"),
                                 leaky, params)
  assert not all(np.allclose(a, b, atol=1e-4) for a, b in zip(per_example(leaky_out, seg), from_single))


# ---------------------------------------------------------------------------------------------
# From trajectories through a seqio Task.


def _trajectories():
  out = []
  for i in range(6):
    out.append(Trajectory(
        id=f"t{i}", kind="qa", prompt=protocol.qa_prompt(f"Where is river {i}?"),
        segments=(Segment("model", f"<think> river {i} </think>\n<search> river {i} </search>"),
                  Segment("observation", "\n\n" + protocol.format_observation(
                      [(f"River {i}", f"the river {i} flows through paris.")]) + "\n\n"),
                  Segment("model", "<answer> paris </answer>")),
        answer="paris", stop_reason="answer"))
  return out


def test_trajectories_through_a_seqio_task_and_the_converter(vocab):
  trajectories = _trajectories()
  features = [tj.trajectory_features(t, vocab) for t in trajectories]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_generator(
        lambda: iter(features),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in features[0]})

  task = seqio.Task(
      "test_feature_converters_trajectory_sft",
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
      output_features={
          "inputs": seqio.Feature(vocab, add_eos=False),
          "targets": seqio.Feature(vocab, add_eos=False),
          "targets_loss_weights": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False,
                                                required=False),
      },
      preprocessors=[])
  lengths = {"inputs": 512, "targets": 256}
  assert max(len(f["inputs"]) for f in features) <= 512 and max(len(f["targets"]) for f in features) <= 256
  ds = task.get_dataset(sequence_length=lengths, split="train", shuffle=False)
  rows = _rows(AgentLMFeatureConverter(pack=True)(ds, lengths))
  assert len(rows) < len(trajectories)
  unpacked = _unpack(rows)
  assert len(unpacked) == len(trajectories)
  for t, (tokens, _, weights, _) in zip(trajectories, unpacked):
    model = tokens[weights == 1]
    assert model[-1] == vocab.eos_id
    assert "".join(vocab.tokenizer.id_to_piece(int(i)) for i in model[:-1]).replace("\u2581", " ") == (
        "".join(s.text for s in t.segments if s.type == "model"))
    assert vocab.decode(tokens[weights == 0].tolist()) == t.prompt + t.segments[1].text
