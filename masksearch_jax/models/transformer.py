"""A decoder-only transformer of the Qwen2.5 / Llama 3 family, in Flax linen.

Reads top to bottom: the config, RMSNorm, rotary embeddings, attention with
grouped-query heads, the SwiGLU MLP, one block, and the decoder that scans the
blocks. Every parameter and activation carries logical axis names ('vocab',
'embed', 'heads', 'kv_heads', 'kv', 'mlp', 'layers', 'batch', 'length'); the
partitioner maps them to mesh axes by rules set in Gin.

Packed rows are supported: `segment_ids` (1, 2, ... per example, 0 on padding)
keep examples from attending to each other, and `positions` restart at 0 for
each example so rotary embeddings see each example from its own start.

For generation the decoder also runs on a preallocated key/value cache
(`KVCache`): each row appends a chunk of new tokens at its own length, and
attends to everything it has written so far (see models/sampler.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """The shape and numerics of the model (Gin presets in gin/models/).

  Attributes:
    vocab_size: Rows of the embedding table (may exceed the tokenizer's size).
    num_layers: Number of transformer blocks.
    d_model: Width of the residual stream.
    num_heads: Query heads.
    num_kv_heads: Key/value heads (grouped-query attention; equal to num_heads for MHA).
    head_dim: Width of one head; None means d_model // num_heads.
    mlp_dim: Width of the SwiGLU hidden layer.
    rope_theta: Base of the rotary frequencies.
    rope_scaling: None, or Llama 3's frequency scaling as a dict with keys
      factor, low_freq_factor, high_freq_factor, original_max_position_embeddings.
    rms_norm_eps: Epsilon of RMSNorm.
    qkv_bias: Biases on the query, key and value projections (Qwen2).
    key_shift: Keys also see the previous token: a layer's keys are projected from
      x_t + s * x_{t-1} (its input at this and the previous position of the example, s a
      learned per-channel vector, zero at initialisation), like the smeared keys of
      Olsson et al. (2022) and RWKV's token shift. It lets an attention head match "the
      token after an earlier copy of my previous token" in one layer, so copying names from
      the context (induction) is learned in a few hundred steps instead of thousands; off
      for the shapes of published checkpoints, which have no such weights.
    tie_embeddings: Use the embedding table as the output projection.
    dtype: Compute dtype, 'float32' or 'bfloat16' (parameters stay float32).
    remat: Recompute each block's activations in the backward pass ('none',
      'full', or 'dots' to save only matmul outputs).
    scan_unroll: Blocks per iteration of the loop over layers (1 = a rolled loop,
      num_layers = fully unrolled). Unrolling saves the copies of each layer's
      activations into and out of the stacked loop buffers (about 10% of a CPU
      training step for a 4-layer model) at the cost of compile time that grows
      with the unrolled layers; parameters are stacked by layer either way.
    attention_logits_soft_cap: None, or a cap on attention logits (unused by Qwen/Llama).
  """

  vocab_size: int = 1024
  num_layers: int = 2
  d_model: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int | None = None
  mlp_dim: int = 512
  rope_theta: float = 10_000.0
  rope_scaling: Any = None
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = False
  key_shift: bool = False
  tie_embeddings: bool = False
  dtype: str = "float32"
  remat: str = "none"
  scan_unroll: int = 1
  attention_logits_soft_cap: float | None = None

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
    if self.dtype not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")
    if not 1 <= self.scan_unroll <= max(self.num_layers, 1):
      raise ValueError(f"scan_unroll must be between 1 and num_layers ({self.num_layers}), got {self.scan_unroll}")
    if self.rope_scaling is not None and not isinstance(self.rope_scaling, dict):
      object.__setattr__(self, "rope_scaling", dict(self.rope_scaling))

  @property
  def kv_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  def num_params(self) -> int:
    """Parameters in the model (the embedding counted once when tied)."""
    d, h, k, f = self.d_model, self.num_heads, self.num_kv_heads, self.kv_dim
    attention = d * f * (h + 2 * k) + h * f * d + (f * (h + 2 * k) if self.qkv_bias else 0)
    block = attention + 3 * d * self.mlp_dim + 2 * d + (d if self.key_shift else 0)
    embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * block + embeddings + d

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward and backward: 6 per weight, plus attention scores)."""
    matmul_params = self.num_params() - self.vocab_size * self.d_model * (0 if self.tie_embeddings else 1)
    attention = 12 * self.num_layers * self.num_heads * self.kv_dim * seq_len / 2  # Causal: half the scores.
    return 6 * matmul_params + attention


def _param(module: nn.Module, name: str, init, shape, axes: tuple[str, ...]):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in float32 (as Qwen2 and Llama do)."""

  eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale).astype(self.dtype)


def rope_frequencies(config: TransformerConfig) -> jnp.ndarray:
  """Inverse frequencies of the rotary embedding, with Llama 3's scaling when configured."""
  dim = config.kv_dim
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  scaling = config.rope_scaling
  if not scaling:
    return inv_freq
  factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
  original = scaling["original_max_position_embeddings"]
  wavelength = 2 * math.pi / inv_freq
  smooth = (original / wavelength - low) / (high - low)
  scaled = jnp.where(wavelength > original / low, inv_freq / factor, inv_freq)
  middle = (wavelength <= original / low) & (wavelength >= original / high)
  return jnp.where(middle, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: jnp.ndarray) -> jnp.ndarray:
  """Rotates [batch, length, heads, dim] by position; halves rotated as in Hugging Face's rotate_half."""
  angles = positions[:, :, None].astype(jnp.float32) * inv_freq[None, None, :]  # [b, l, dim/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


def attention_mask(segment_ids: jnp.ndarray) -> jnp.ndarray:
  """[batch, 1, q, k]: causal, within one example, and nothing for padding (segment 0)."""
  length = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((length, length), dtype=bool))
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] > 0)
  return (same & causal[None])[:, None]


def cache_dtype(config: TransformerConfig):
  """The dtype of the decoding cache: the compute dtype, except float32 for bfloat16 on CPU.

  XLA:CPU computes a bfloat16 product whose operands are not row-major [m, k] x [k, n] (decoding's
  q k^T over the cache is not) by first converting its operands to float32, which for the cache
  means converting every layer's whole cache each step: a fifth of a bfloat16 decode step at batch
  16. A float32 cache is read once instead.
  """
  return jnp.float32 if _takes_bfloat16_dot(config.compute_dtype) else config.compute_dtype


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for rows being generated, preallocated to `max_length`.

  Attributes:
    key: One array per layer, [batch, kv_heads, max_length, head_dim] in `cache_dtype` (heads
      ahead of positions, so attention reads a layer's keys as they lie). Separate buffers, not
      one stacked array: a decode step writes its new tokens into each in place and attention
      reads each directly, where slicing a layer out of a stacked carry copies it every step.
    value: Same shapes as `key`.
    lengths: [batch] int32, tokens written so far in each row; a row's next chunk goes there.
    previous: With `key_shift`, one array per layer, [batch, embed]: the layer's input at each
      row's last written token, which the keys of the row's next chunk shift in; else empty.
  """

  key: tuple[jax.Array, ...]
  value: tuple[jax.Array, ...]
  lengths: jax.Array
  previous: tuple[jax.Array, ...] = ()

  # Logical axes of each layer's keys and values, for placing them on the mesh as training
  # places activations.
  AXES = ("batch", "kv_heads", "length", "kv")
  PREVIOUS_AXES = ("batch", "embed")

  @classmethod
  def zeros(cls, config: TransformerConfig, batch_size: int, max_length: int) -> KVCache:
    shape = (batch_size, config.num_kv_heads, max_length, config.kv_dim)
    zeros = lambda: tuple(jnp.zeros(shape, cache_dtype(config)) for _ in range(config.num_layers))
    previous = tuple(jnp.zeros((batch_size, config.d_model), config.compute_dtype)
                     for _ in range(config.num_layers)) if config.key_shift else ()
    return cls(key=zeros(), value=zeros(), lengths=jnp.zeros((batch_size,), jnp.int32), previous=previous)

  @property
  def max_length(self) -> int:
    return self.key[0].shape[2]


def unstack_layers(params: Any, num_layers: int) -> dict:
  """`params` (unboxed) with the stacked "layers" subtree split into a tuple of per-layer subtrees.

  Decoding with a cache accepts either form. A decode loop should split once outside the loop:
  slicing inside it would copy every layer's weights at each step.
  """
  params = nn.meta.unbox(params)
  layers = params["layers"]
  return {**params, "layers": tuple(jax.tree.map(lambda p, i=i: p[i], layers) for i in range(num_layers))}


def _write_rows(cache: jax.Array, new: jax.Array, starts: jax.Array) -> jax.Array:
  """Writes new[b] ([chunk, kv_heads, f]) into one layer's cache[b] ([kv_heads, max_length, f]) at row b's start.

  One scatter of just the chunk, in place: the decode loop carries the whole cache, so a step costs
  its new tokens, not a copy of every layer's keys and values.
  """
  rows = jnp.arange(new.shape[0])[:, None]
  slots = starts[:, None] + jnp.arange(new.shape[1])[None, :]
  # Advanced indices split by a slice put their broadcast shape [batch, chunk] first: new's shape.
  return cache.at[rows, :, slots, :].set(new, mode="drop")


# Query rows per block of the full-sequence attention (longer rows skip the blocks above the diagonal).
QUERY_BLOCK = 256


def _matmul(x: jax.Array, kernel: jax.Array, contract: int = 1) -> jax.Array:
  """x's last `contract` dims times kernel's first ones, as one 2-D [tokens, in] x [in, out] product.

  XLA:CPU lays out the weight gradient of a [batch, length, in] einsum with transposes of the
  whole activation (they cost as much as the product itself); on [tokens, in] it is one plain
  product. On TPU and GPU the reshapes are free.
  """
  lead, out = x.shape[:x.ndim - contract], kernel.shape[contract:]
  inner = math.prod(kernel.shape[:contract])
  y = _dot(x.reshape(-1, inner), kernel.reshape(inner, -1), x.dtype)
  return y.reshape(lead + out)


def _dot(x: jax.Array, kernel: jax.Array, out_dtype) -> jax.Array:
  """x [m, k] times kernel [k, n] in x's dtype, accumulated in float32 and returned as `out_dtype`.

  bfloat16 products on CPU go through `_bfloat16_dot`; elsewhere XLA picks its fast kernels for
  autodiff's products by itself, and a plain product keeps remat policies that save products
  (`remat='dots'`) working.
  """
  if _takes_bfloat16_dot(x.dtype):
    return _bfloat16_dot(x, kernel, jnp.dtype(out_dtype))
  return jnp.dot(x, kernel, preferred_element_type=jnp.float32).astype(out_dtype)


def _takes_bfloat16_dot(dtype) -> bool:
  """Whether products in `dtype` go through `_bfloat16_dot` (and want row-major operands)."""
  return dtype == jnp.bfloat16 and jax.default_backend() == "cpu"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bfloat16_dot(x, kernel, out_dtype):
  """A bfloat16 product x [..., m, k] @ kernel [..., k, n] whose gradients are such products too.

  XLA:CPU runs bfloat16 x bfloat16 -> float32 products at about twice its float32 rate (YNNPACK,
  on CPUs with AVX512-BF16 or AMX), but only when both operands lie row-major with the contracted
  dimension inner on the left and outer on the right; any other product, such as the x^T g and
  g k^T of autodiff's gradients, it first converts to float32. So the backward pass writes the
  transposes its products need (`_row_major_transpose`), each gradient in whichever of its two
  forms (dx = g k^T, or dx^T = k g^T transposed back) moves fewer elements. `_dot` and the
  attention use it on CPU only.
  """
  return jnp.matmul(x, kernel, preferred_element_type=jnp.float32).astype(out_dtype)


def _bfloat16_dot_fwd(x, kernel, out_dtype):
  return _bfloat16_dot(x, kernel, out_dtype), (x, kernel)


def _bfloat16_dot_bwd(out_dtype, residuals, grad):
  x, kernel = residuals
  grad = grad.astype(x.dtype)
  m, k, n = x.shape[-2], x.shape[-1], kernel.shape[-1]

  def product(a, b, dtype):
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)

  # Each gradient transposes one operand, or the incoming gradient and its own result (XLA writes
  # the gradient's transpose once when both take that form).
  if k * n <= m * n + m * k:
    dx = product(grad, _row_major_transpose(kernel), x.dtype)
  else:
    dx = _row_major_transpose(product(kernel, _row_major_transpose(grad), x.dtype))
  if m * k <= m * n + k * n:
    dkernel = product(_row_major_transpose(x), grad, kernel.dtype)
  else:
    dkernel = _row_major_transpose(product(_row_major_transpose(grad), x, kernel.dtype))
  return dx, dkernel


_bfloat16_dot.defvjp(_bfloat16_dot_fwd, _bfloat16_dot_bwd)


def _row_major_transpose(a: jax.Array) -> jax.Array:
  """a with its last two dimensions swapped, stored transposed rather than viewed with swapped strides.

  XLA gives a plain transpose a column-major layout (a free view), which a following product
  treats as transposed; the double flip (which XLA removes later) hides that until the product's
  bfloat16 kernel is chosen, and layout assignment then writes the transpose out.
  """
  return jnp.flip(jnp.flip(jnp.swapaxes(a, -1, -2), -2), -2)


def _attend(q, key, value, mask, soft_cap, dt, row_major=False):
  """Softmax attention of q [b, k, g, q, f] over key/value [b, k, s, f] where mask [b, 1, q, s] -> [b, k, g, q, f].

  Heads come ahead of positions and the group's queries are stacked ([b, k, g * q, f]), so both
  products are plain batched matmuls over (batch, kv head) in XLA's canonical layout; in training
  this halves the attention's time on CPU against position-major einsums, whose gradients XLA
  transposes, and in decoding the cache is read as it lies. With `row_major` (bfloat16 training on
  CPU) the keys are transposed once and both products go through `_bfloat16_dot`.
  """
  b, k, g, length, f = q.shape
  q = q.reshape(b, k, g * length, f)
  if row_major:
    logits = _bfloat16_dot(q, _row_major_transpose(key), jnp.float32)
  else:
    logits = jnp.einsum("bkqf,bksf->bkqs", q, key, preferred_element_type=jnp.float32)
  logits = logits.reshape(b, k, g, length, key.shape[2]) * f ** -0.5
  if soft_cap:
    logits = soft_cap * jnp.tanh(logits / soft_cap)
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(dt).reshape(b, k, g * length, key.shape[2])
  if row_major:
    out = _bfloat16_dot(weights, value, dt)
  else:
    out = jnp.einsum("bkqs,bksf->bkqf", weights, value)
  return out.reshape(b, k, g, length, f)


def previous_inputs(x: jax.Array, positions: jax.Array, carried: jax.Array | None = None) -> jax.Array:
  """x [batch, length, embed] one position later: each token gets its example's previous token's x.

  An example's first token (position 0, also inside packed rows) gets zeros; the first token of a
  decoding chunk gets `carried` [batch, embed], the row's last token before the chunk.
  """
  first = jnp.zeros_like(x[:, :1]) if carried is None else carried[:, None].astype(x.dtype)
  shifted = jnp.concatenate([first, x[:, :-1]], axis=1)
  return jnp.where((positions > 0)[..., None], shifted, jnp.zeros_like(shifted))


def _last_written(x: jax.Array, counts: jax.Array, carried: jax.Array) -> jax.Array:
  """Each row's x at its chunk's last real token ([batch, embed]); `carried` for rows that wrote none."""
  last = jnp.take_along_axis(x, jnp.maximum(counts - 1, 0)[:, None, None], axis=1)[:, 0]
  return jnp.where((counts > 0)[:, None], last, carried.astype(last.dtype))


class Attention(nn.Module):
  """Grouped-query self-attention with rotary embeddings."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, mask, cache=None):
    """Attention output for x [batch, length, embed]; with `cache` = (keys, values, starts, previous,
    counts), this layer's cache ([batch, kv_heads, max_length, head_dim] each), x's keys and values
    are first written into its slots at each row's start, attention runs over the whole cache, and
    the result is (output, (keys, values, previous)): with `key_shift`, `previous` [batch, embed] is
    x at the row's last token before the chunk on the way in and at the chunk's last real token
    (of `counts`) on the way out; None otherwise."""
    c = self.config
    dt = c.compute_dtype
    d, h, k, f = c.d_model, c.num_heads, c.num_kv_heads, c.kv_dim
    init = nn.initializers.normal(stddev=d ** -0.5)

    def project(name, heads, axes, inputs=x):
      kernel = _param(self, f"{name}_kernel", init, (d, heads, f), ("embed",) + axes)
      y = _matmul(inputs, kernel.astype(dt))
      if c.qkv_bias:
        y = y + _param(self, f"{name}_bias", nn.initializers.zeros, (heads, f), axes).astype(dt)
      return y

    key_inputs, previous = x, None
    if c.key_shift:
      shift = _param(self, "key_shift", nn.initializers.zeros, (d,), ("embed",))
      carried = None if cache is None else cache[3]
      key_inputs = x + shift.astype(dt) * previous_inputs(x, positions, carried)
      if cache is not None:
        previous = _last_written(x, cache[4], carried)
    q = project("query", h, ("heads", "kv"))
    key = project("key", k, ("kv_heads", "kv"), key_inputs)
    value = project("value", k, ("kv_heads", "kv"))
    inv_freq = rope_frequencies(c)
    q = nn.with_logical_constraint(apply_rope(q, positions, inv_freq), ("batch", "length", "heads", "kv"))
    key = apply_rope(key, positions, inv_freq)
    if cache is not None:
      key_cache, value_cache, starts = cache[:3]
      key = key_cache = _write_rows(key_cache, key.astype(key_cache.dtype), starts)
      value = value_cache = _write_rows(value_cache, value.astype(value_cache.dtype), starts)
    # Each group of h // k query heads shares one key/value head.
    b, length = q.shape[:2]
    q = q.reshape(b, length, k, h // k, f).transpose(0, 2, 3, 1, 4)
    if cache is None:
      key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
    soft_cap = c.attention_logits_soft_cap
    # With a cache (prefill and decoding) attention reads it as it lies.
    row_major = cache is None and _takes_bfloat16_dot(dt)
    if cache is None and length > QUERY_BLOCK:
      # The mask is causal by index here, so queries [i, i + B) never see keys past i + B:
      # skipping those blocks saves up to half the quadratic work, which dominates small
      # models on long rows.
      out = jnp.concatenate([
          _attend(q[:, :, :, i:i + QUERY_BLOCK], key[:, :, :i + QUERY_BLOCK], value[:, :, :i + QUERY_BLOCK],
                  mask[:, :, i:i + QUERY_BLOCK, :i + QUERY_BLOCK], soft_cap, dt, row_major)
          for i in range(0, length, QUERY_BLOCK)], axis=3)
    else:
      out = _attend(q, key, value, mask, soft_cap, dt, row_major)
    out = out.astype(dt).transpose(0, 3, 1, 2, 4)  # A float32 cache (`cache_dtype`) gives float32.
    out = out.reshape(b, length, h, f)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
    kernel = _param(self, "out_kernel", nn.initializers.normal(stddev=(h * f) ** -0.5), (h, f, d),
                    ("heads", "kv", "embed"))
    out = _matmul(out, kernel.astype(dt), contract=2)
    return out if cache is None else (out, (key_cache, value_cache, previous))


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dt = c.compute_dtype
    init_in = nn.initializers.normal(stddev=c.d_model ** -0.5)
    gate = _param(self, "gate_kernel", init_in, (c.d_model, c.mlp_dim), ("embed", "mlp"))
    up = _param(self, "up_kernel", init_in, (c.d_model, c.mlp_dim), ("embed", "mlp"))
    down = _param(self, "down_kernel", nn.initializers.normal(stddev=c.mlp_dim ** -0.5), (c.mlp_dim, c.d_model),
                  ("mlp", "embed"))
    hidden = jax.nn.silu(_matmul(x, gate.astype(dt))) * _matmul(x, up.astype(dt))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    return _matmul(hidden, down.astype(dt))


class Block(nn.Module):
  """Pre-norm residual block: attention, then the MLP. Scanned over layers (carry = x)."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, carry, positions, mask, starts=None, counts=None):
    """carry is x [batch, length, embed], or when decoding (x, keys, values, previous) with this
    layer's cache (see `Attention`), `starts` each row's first slot and `counts` its real tokens."""
    c = self.config
    cache = None
    x = carry
    if starts is not None:
      x, key_cache, value_cache, previous = carry
      cache = (key_cache, value_cache, starts, previous, counts)
    normed = RMSNorm(c.rms_norm_eps, c.compute_dtype, name="attention_norm")(x)
    h = Attention(c, name="attention")(normed, positions, mask, cache)
    if cache is not None:
      h, (key_cache, value_cache, previous) = h
    x = nn.with_logical_constraint(x + h, ("batch", "length", "embed"))
    h = MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, c.compute_dtype, name="mlp_norm")(x))
    x = nn.with_logical_constraint(x + h, ("batch", "length", "embed"))
    return (x if cache is None else (x, key_cache, value_cache, previous)), None


class Decoder(nn.Module):
  """Tokens in, logits out: embed, the scanned blocks, a final norm, the output projection."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens, positions=None, segment_ids=None, *, cache: KVCache | None = None,
               chunk_lengths=None, logits_at=None):
    """Logits [batch, length, vocab] (float32) for `tokens` [batch, length].

    Args:
      tokens: Token ids.
      positions: Position of each token in its example; default 0, 1, 2, ...
      segment_ids: Example of each token in a packed row (0 = padding); default all 1.
      cache: Decode on this cache instead: row b's tokens continue its sequence at
        `cache.lengths[b]` (positions and masks follow from that), and the call returns
        (logits, new cache). Padding after a row's chunk is written but not counted, so
        the row's next chunk overwrites it.
      chunk_lengths: With `cache`: [batch] count of real tokens in each row's chunk (default
        all); the new cache's lengths advance by it.
      logits_at: [batch] index of the one position per row whose logits are wanted; the
        result is then [batch, vocab] (saves the output projection of a long prefill).
    """
    c = self.config
    dt = c.compute_dtype
    if cache is not None:
      return self._decode(tokens, cache, chunk_lengths, logits_at)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    embedding = self._embed()
    x = embedding.astype(dt)[tokens]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    block = Block
    if c.remat != "none":
      policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if c.remat == "dots" else None
      block = nn.remat(Block, prevent_cse=False, policy=policy)
    blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(nn.broadcast,) * 2,
                     length=c.num_layers, unroll=c.scan_unroll, metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = blocks(c, name="layers")(x, positions, attention_mask(segment_ids))
    return self._logits(x, embedding, logits_at)

  def _embed(self):
    c = self.config
    # Small embeddings (as Hugging Face initialises Qwen2 and Llama) keep the first logits near
    # uniform when the table doubles as the output projection.
    return _param(self, "embedding", nn.initializers.normal(stddev=0.02), (c.vocab_size, c.d_model),
                  ("vocab", "embed"))

  def _logits(self, x, embedding, logits_at):
    c = self.config
    dt = c.compute_dtype
    x = RMSNorm(c.rms_norm_eps, dt, name="final_norm")(x)
    if logits_at is not None:
      x = jnp.take_along_axis(x, logits_at[:, None, None], axis=1)
    if c.tie_embeddings:
      # Written out transposed for bfloat16 on CPU; see `_bfloat16_dot`.
      head = _row_major_transpose(embedding.astype(dt)) if _takes_bfloat16_dot(dt) else embedding.astype(dt).T
    else:
      head = _param(self, "lm_head", nn.initializers.normal(stddev=c.d_model ** -0.5), (c.d_model, c.vocab_size),
                    ("embed", "vocab")).astype(dt)
    logits = _dot(x.reshape(-1, c.d_model), head, jnp.float32)
    logits = logits.reshape(x.shape[:2] + (c.vocab_size,))
    logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return logits if logits_at is None else logits[:, 0]

  def _decode(self, tokens, cache: KVCache, chunk_lengths, logits_at):
    c = self.config
    starts = cache.lengths
    positions = starts[:, None] + jnp.arange(tokens.shape[1])[None, :]
    # A query sees every cache slot up to its own position: the row's earlier chunks and its
    # chunk so far. Slots past that (stale padding, unwritten zeros) stay hidden.
    mask = (jnp.arange(cache.max_length)[None, None, :] <= positions[:, :, None])[:, None]
    embedding = self._embed()
    x = nn.with_logical_constraint(embedding.astype(c.compute_dtype)[tokens], ("batch", "length", "embed"))
    # Layers run one after another (not scanned) on their own slices of the stacked parameters, so
    # each layer's cache is its own buffer: written in place and read as it lies, never copied.
    layers = self.variables["params"]["layers"]
    if not isinstance(layers, tuple):
      layers = unstack_layers(self.variables["params"], c.num_layers)["layers"]
    if chunk_lengths is None:
      chunk_lengths = jnp.full_like(starts, tokens.shape[1])
    chunk_lengths = chunk_lengths.astype(starts.dtype)
    keys, values, previous = [], [], []
    for i in range(c.num_layers):
      carry = (x, cache.key[i], cache.value[i], cache.previous[i] if c.key_shift else None)
      (x, key, value, last), _ = Block(c, parent=None).apply({"params": layers[i]}, carry, positions, mask, starts,
                                                             chunk_lengths)
      keys.append(key)
      values.append(value)
      if c.key_shift:
        previous.append(last)
    new_cache = KVCache(key=tuple(keys), value=tuple(values), lengths=starts + chunk_lengths, previous=tuple(previous))
    return self._logits(x, embedding, logits_at), new_cache
