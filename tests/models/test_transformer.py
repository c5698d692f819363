"""Tests of the decoder (masksearch_jax/models/transformer.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masksearch_jax.models import transformer
from masksearch_jax.models.transformer import Decoder, TransformerConfig, rope_frequencies

SMALL = TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=64,
                          qkv_bias=True)


SHIFTED = TransformerConfig(**{**SMALL.__dict__, "key_shift": True})


def _init(config, length=8):
  boxed = Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))["params"]
  return boxed, nn.unbox(boxed)


def _shifted_params():
  """SHIFTED's initial weights with a nonzero key shift (it starts at zero, which would hide it)."""
  _, params = _init(SHIFTED)
  attention = dict(params["layers"]["attention"])
  attention["key_shift"] = jax.random.normal(jax.random.PRNGKey(1), attention["key_shift"].shape)
  return {**params, "layers": {**params["layers"], "attention": attention}}


def test_every_parameter_has_logical_axes_and_the_count_matches():
  boxed, params = _init(SMALL)
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(leaf, nn.LogicallyPartitioned) and len(leaf.names) == leaf.value.ndim for leaf in leaves)
  layer_leaves = jax.tree_util.tree_leaves(boxed["layers"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(leaf.names[0] == "layers" and leaf.value.shape[0] == SMALL.num_layers for leaf in layer_leaves)
  assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == SMALL.num_params()
  tied = TransformerConfig(**{**SMALL.__dict__, "tie_embeddings": True})
  assert "lm_head" not in _init(tied)[1] and tied.num_params() == SMALL.num_params() - 97 * 32
  shifted = _init(SHIFTED)[1]
  assert shifted["layers"]["attention"]["key_shift"].shape == (2, 32)
  assert sum(x.size for x in jax.tree_util.tree_leaves(shifted)) == SHIFTED.num_params() == SMALL.num_params() + 64


def test_key_shift_lets_keys_see_the_previous_token():
  model = Decoder(SHIFTED)
  tokens = jnp.array([[5, 6, 7, 8, 9, 10]])
  _, plain = _init(SMALL)
  zero = {**plain, "layers": {**plain["layers"], "attention": {**plain["layers"]["attention"],
                                                                "key_shift": jnp.zeros((2, 32))}}}
  # With a zero shift the model is the plain one.
  unshifted = model.apply({"params": zero}, tokens)
  np.testing.assert_allclose(unshifted, Decoder(SMALL).apply({"params": plain}, tokens), atol=1e-6)
  # With a shift, every key but the first (which has no previous token) changes.
  shift = jax.random.normal(jax.random.PRNGKey(1), (2, 32))
  shifted = model.apply({"params": {**zero, "layers": {**zero["layers"], "attention": {
      **zero["layers"]["attention"], "key_shift": shift}}}}, tokens)
  np.testing.assert_allclose(shifted[0, 0], unshifted[0, 0], atol=1e-6)
  assert not np.allclose(shifted[0, 1:], unshifted[0, 1:], atol=1e-3)


@pytest.mark.parametrize("config", [SMALL, SHIFTED], ids=["plain", "key_shift"])
def test_packed_rows_equal_the_examples_run_alone(config):
  params = _shifted_params() if config.key_shift else _init(config)[1]
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 97, (1, 5)), rng.integers(0, 97, (1, 9))
  packed = jnp.concatenate([a, b, np.zeros((1, 2), np.int64)], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 9 + [0] * 2])
  positions = jnp.array([list(range(5)) + list(range(9)) + [0, 0]])
  model = Decoder(config)
  out = model.apply({"params": params}, packed, positions, segments)
  alone_a = model.apply({"params": params}, jnp.asarray(a))
  alone_b = model.apply({"params": params}, jnp.asarray(b))
  np.testing.assert_allclose(out[0, :5], alone_a[0], atol=2e-5)
  np.testing.assert_allclose(out[0, 5:14], alone_b[0], atol=2e-5)


def test_long_rows_skip_masked_blocks_and_change_nothing(monkeypatch):
  # Rows longer than two query blocks attend block by block; with packing, padding and a row length
  # that is not a multiple of the block, logits and gradients equal the one-block computation.
  _, params = _init(SMALL)
  rng = np.random.default_rng(1)
  length = 2 * transformer.QUERY_BLOCK + 77
  tokens = jnp.asarray(rng.integers(0, 97, (2, length)))
  cut = transformer.QUERY_BLOCK + 30
  segments = jnp.array([[1] * cut + [2] * (length - cut - 9) + [0] * 9, [1] * length])
  positions = jnp.array([list(range(cut)) + list(range(length - cut - 9)) + [0] * 9, list(range(length))])

  def loss(p):
    logits = Decoder(SMALL).apply({"params": p}, tokens, positions, segments)
    return (jax.nn.log_softmax(logits)[..., 3] * (segments > 0)).sum(), logits

  (value, blocked), grads = jax.value_and_grad(loss, has_aux=True)(params)
  monkeypatch.setattr(transformer, "QUERY_BLOCK", length)  # One block: plain full attention.
  (value_full, full), grads_full = jax.value_and_grad(loss, has_aux=True)(params)
  np.testing.assert_allclose(blocked, full, atol=2e-5)
  np.testing.assert_allclose(value, value_full, rtol=1e-5)
  # Gradients summed over ~600 positions in another order: float32 rounding scales with the leaf's size.
  for g, g_full in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_full)):
    np.testing.assert_allclose(g, g_full, atol=2e-6 * float(np.abs(g_full).max()), rtol=1e-4)


def test_causal_a_token_never_sees_the_future():
  _, params = _init(SMALL)
  tokens = jnp.arange(10)[None] % 97
  changed = tokens.at[0, 7].set(50)
  model = Decoder(SMALL)
  before, after = model.apply({"params": params}, tokens), model.apply({"params": params}, changed)
  np.testing.assert_allclose(before[0, :7], after[0, :7], atol=1e-6)
  assert not np.allclose(before[0, 7:], after[0, 7:])


def test_grouped_query_attention_equals_repeated_key_value_heads():
  """GQA with 2 key/value heads equals MHA whose 4 key/value heads repeat them."""
  gqa = TransformerConfig(**{**SMALL.__dict__, "qkv_bias": False})
  mha = TransformerConfig(**{**gqa.__dict__, "num_kv_heads": 4})
  _, params = _init(gqa)
  repeat = lambda x: jnp.repeat(x, 2, axis=2)  # noqa: E731  [layers, d_model, kv_heads, head_dim]
  mha_params = jax.tree_util.tree_map(lambda x: x, params)
  mha_params["layers"]["attention"]["key_kernel"] = repeat(params["layers"]["attention"]["key_kernel"])
  mha_params["layers"]["attention"]["value_kernel"] = repeat(params["layers"]["attention"]["value_kernel"])
  tokens = jnp.arange(12)[None] % 97
  np.testing.assert_allclose(Decoder(gqa).apply({"params": params}, tokens),
                             Decoder(mha).apply({"params": mha_params}, tokens), atol=2e-5)


def test_llama3_rope_scaling_keeps_high_and_divides_low_frequencies():
  base = TransformerConfig(d_model=256, num_heads=2, num_kv_heads=2, rope_theta=500000.0)
  scaled = TransformerConfig(**{**base.__dict__, "rope_scaling": {
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
  plain, adjusted = np.asarray(rope_frequencies(base)), np.asarray(rope_frequencies(scaled))
  wavelength = 2 * np.pi / plain
  high, low = wavelength < 8192 / 4, wavelength > 8192
  np.testing.assert_allclose(adjusted[high], plain[high])
  np.testing.assert_allclose(adjusted[low], plain[low] / 8.0)
  middle = ~high & ~low
  assert np.all((adjusted[middle] < plain[middle]) & (adjusted[middle] > plain[middle] / 8.0))


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_remat_and_bfloat16_give_the_same_gradients(remat):
  config = TransformerConfig(**{**SMALL.__dict__, "remat": remat})
  _, params = _init(config)
  tokens = jnp.arange(12)[None] % 97

  def loss(p, c):
    return Decoder(c).apply({"params": p}, tokens).mean()

  reference = jax.grad(loss)(params, SMALL)
  np.testing.assert_allclose(jax.tree_util.tree_leaves(jax.grad(loss)(params, config))[0],
                             jax.tree_util.tree_leaves(reference)[0], atol=1e-6)
  bf16 = TransformerConfig(**{**config.__dict__, "dtype": "bfloat16"})
  grads = jax.grad(loss)(params, bf16)
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))  # Parameters stay float32.
  # bfloat16 products (and on CPU their hand-written gradients) follow the float32 gradients.
  for name, g, r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(grads),
                        jax.tree_util.tree_leaves(reference)):
    assert np.linalg.norm(g - r) <= 0.05 * np.linalg.norm(r) + 1e-6, name[0]
  assert float(jnp.abs(Decoder(bf16).apply({"params": params}, tokens) -
                       Decoder(SMALL).apply({"params": params}, tokens)).max()) < 0.1


@pytest.mark.parametrize("shape", [(64, 8, 8), (2, 32, 32), (32, 32, 2)],
                         ids=["both-transpose-an-operand", "dx-transposes-the-gradient",
                              "dkernel-transposes-the-gradient"])
def test_bfloat16_dot_gradients_match_a_plain_product(shape):
  m, k, n = shape
  x = jax.random.normal(jax.random.PRNGKey(1), (3, m, k)).astype(jnp.bfloat16)
  kernel = jax.random.normal(jax.random.PRNGKey(2), (3, k, n)).astype(jnp.bfloat16)
  weights = jax.random.normal(jax.random.PRNGKey(3), (3, m, n))

  def loss(product, a, b):
    return jnp.sum(product(a, b) * weights)

  def plain(a, b):
    return jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32))

  ours = jax.grad(lambda a, b: loss(lambda u, v: transformer._bfloat16_dot(u, v, jnp.float32), a, b), (0, 1))(x, kernel)
  reference = jax.grad(lambda a, b: loss(plain, a, b), (0, 1))(x, kernel)
  for got, want in zip(ours, reference):
    assert got.shape == want.shape and got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=2e-2, atol=2e-2 * float(jnp.abs(want.astype(jnp.float32)).max()))


# Parameter counts of the released checkpoints (their safetensors), embeddings included.
PUBLISHED_PARAMETERS = {
    "qwen2_5_0_5b": 494_032_768, "qwen2_5_1_5b": 1_543_714_304, "qwen2_5_3b": 3_085_938_688,
    "qwen2_5_7b": 7_615_616_512, "llama3_2_1b": 1_235_814_400, "llama3_2_3b": 3_212_749_824,
    "llama3_1_8b": 8_030_261_248,
}


@pytest.mark.parametrize("preset", sorted(PUBLISHED_PARAMETERS))
def test_gin_model_presets_have_the_released_shapes(preset):
  import gin

  from masksearch_jax import gin_flags
  gin_flags.parse(gin_files=[f"models/{preset}.gin"], bindings=[])
  try:
    config = gin.get_configurable(TransformerConfig)()
  finally:
    gin.clear_config()
  assert config.num_params() == PUBLISHED_PARAMETERS[preset]
  assert config.qkv_bias == preset.startswith("qwen")  # Qwen2 has q/k/v biases, Llama none.
  assert config.dtype == "bfloat16"


def test_bad_configs_are_refused():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    TransformerConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="dtype"):
    TransformerConfig(dtype="float16")
  with pytest.raises(ValueError, match="remat"):
    TransformerConfig(remat="some")
