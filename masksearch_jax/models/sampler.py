"""Batched generation on a preallocated key/value cache, for rollouts and serving.

A `Sampler` holds a batch of rows, each a growing token sequence whose keys and
values live in one `KVCache`. Two jitted functions do all the work:

- `append` prefills new tokens for any rows (a prompt, or an observation the
  environment inserts between turns), each row at its own length, in chunks of a
  few fixed bucket sizes, so prompts of any length up to the capacity reuse the
  same compiled functions;
- `generate` decodes inside one `lax.while_loop` with static shapes: it samples
  (greedy, temperature, top-k, top-p), records each token's log-probability
  under the model, writes the token into the cache, and stops each row on its own
  when the row ends in a stop sequence (`</search>`, `</answer>`) or the end of
  sequence id, or runs out of new tokens or cache.

Because a stopped row's last token is in its cache, a rollout continues a row by
appending the observation and generating again: the context is never re-encoded.

Both functions run the model on a window of the cache: its first W slots, W the
smallest of a few static sizes (powers of two from 512 up to half the cache, and
the whole cache) that holds every row the call writes. Attention and the model's
per-step cache update then cost what the rows hold, not what the cache could hold;
rows the call does not write keep their cache as it was. The cache itself is the capacity plus one slot
(where a finished row's unused step writes); a prefill chunk that runs past it goes
to a temporarily widened copy.

Log-probabilities are those of the model itself (the softmax of its logits before
temperature, top-k or top-p), which is what a policy-gradient update compares with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from masksearch_jax.models.transformer import Decoder, KVCache, TransformerConfig, unstack_layers
from masksearch_jax.training.partitioning import Partitioner


class StopReason(enum.IntEnum):
  """Why a row stopped generating (`GenerationResult.stop_reasons`)."""

  NOT_RUN = 0  # The row was not active in this call.
  STOP_SEQUENCE = 1  # It wrote one of the stop sequences (included in its tokens).
  END_OF_SEQUENCE = 2  # It wrote the end-of-sequence id (included in its tokens).
  MAX_NEW_TOKENS = 3  # It wrote the most tokens one call may write.
  CAPACITY = 4  # Its cache is full.


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How the next token is chosen.

  Attributes:
    temperature: Softmax temperature; 0 means greedy (argmax).
    top_k: Sample among the k most likely tokens only; 0 means all.
    top_p: Sample among the smallest set of most likely tokens whose probability reaches p
      (nucleus sampling); 1.0 means all.
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


GREEDY = SamplingParams(temperature=0.0)


@flax.struct.dataclass
class DecodeState:
  """The rows being generated: their cache and the logits that predict each row's next token."""

  cache: KVCache
  next_logits: jax.Array  # [batch, vocab] float32.


@dataclasses.dataclass
class GenerationResult:
  """What one `generate` call wrote, per row (host arrays).

  Attributes:
    tokens: [batch, max_new_tokens] ids; row b's first `num_tokens[b]` are real, the rest padding.
    logprobs: [batch, max_new_tokens] the model's log-probability of each written token.
    num_tokens: [batch] tokens written.
    stop_reasons: [batch] `StopReason` values.
  """

  tokens: np.ndarray
  logprobs: np.ndarray
  num_tokens: np.ndarray
  stop_reasons: np.ndarray

  def row_tokens(self, b: int) -> np.ndarray:
    return self.tokens[b, :self.num_tokens[b]]

  def row_logprobs(self, b: int) -> np.ndarray:
    return self.logprobs[b, :self.num_tokens[b]]


def choose_tokens(logits: jax.Array, rng: jax.Array, sampling: SamplingParams) -> jax.Array:
  """Next token ids [batch] from logits [batch, vocab] as `sampling` says."""
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  neg_inf = jnp.finfo(logits.dtype).min
  if sampling.top_k:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if sampling.top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the tokens before it have not yet reached p (so the most likely one always stays).
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < sampling.top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, neg_inf)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _stop_table(stop_sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Stop sequences right-aligned in a [num, width] table (-1 = no token), and their lengths."""
  sequences = [tuple(int(t) for t in s) for s in stop_sequences if len(s)]
  width = max((len(s) for s in sequences), default=1)
  table = np.full((max(len(sequences), 1), width), -1, np.int32)
  lengths = np.zeros((max(len(sequences), 1),), np.int32)
  for i, s in enumerate(sequences):
    table[i, width - len(s):] = s
    lengths[i] = len(s)
  return table, lengths


class Sampler:
  """Generation for a fixed batch of rows on one preallocated cache.

  Args:
    config: The model's shape.
    params: Its parameters (placed on the mesh if a partitioner is given). Assign new ones to
      `params` after an update (as DAPO does); they are cast to the compute dtype once per assignment.
    batch_size: Rows generated together (static: one compiled program per size).
    capacity: Most tokens a row may hold (prompt, generations and observations together).
    max_new_tokens: Most tokens one `generate` call writes per row (static output width).
    stop_sequences: Token sequences that end a row's turn (for example the ids of `</search>`
      and `</answer>`); the stop tokens stay in the row's output and cache.
    eos_id: End-of-sequence id (also a stop), or None.
    pad_id: Id written where a row has no token.
    prefill_buckets: Chunk lengths for `append`; a chunk is padded to the smallest bucket that
      holds it (or, when that would be mostly padding, split at a smaller one), and longer inputs
      go in several chunks of the largest bucket.
    partitioner: Places parameters, cache and batch on its mesh with the training rules
      (None: the default device).
  """

  def __init__(self, config: TransformerConfig, params: Any, *, batch_size: int, capacity: int,
               max_new_tokens: int, stop_sequences: Sequence[Sequence[int]] = (), eos_id: int | None = None,
               pad_id: int = 0, prefill_buckets: Sequence[int] = (32, 128, 512),
               partitioner: Partitioner | None = None):
    if capacity < 1 or max_new_tokens < 1 or batch_size < 1:
      raise ValueError(f"batch_size, capacity and max_new_tokens must be positive, got {batch_size}, {capacity}, "
                       f"{max_new_tokens}")
    self.config = config
    self.batch_size = batch_size
    self.capacity = capacity
    self.max_new_tokens = max_new_tokens
    self.eos_id = eos_id
    self.pad_id = pad_id
    self.prefill_buckets = tuple(sorted(set(int(b) for b in prefill_buckets)))
    self.partitioner = partitioner
    self._model = Decoder(config)
    self._stop_table, self._stop_lengths = _stop_table(stop_sequences)
    # One slot of slack: a row that has stopped still writes (uncounted) at its length, which may be
    # the capacity. Padded prefill chunks that run further go to a widened copy (see `_window`).
    self._allocated = capacity + 1
    # Static window sizes (one compiled program each): powers of two from 512 up to half the cache,
    # then the whole cache. Smaller caches are read whole (a window would save little).
    self._windows = tuple(w for w in (2 ** i for i in range(9, 40)) if 2 * w <= self._allocated) + (self._allocated,)
    if partitioner is not None:
      self._state_shardings = DecodeState(
          cache=KVCache(key=(partitioner.sharding(KVCache.AXES),) * config.num_layers,
                        value=(partitioner.sharding(KVCache.AXES),) * config.num_layers,
                        lengths=partitioner.sharding(("batch",)),
                        previous=(partitioner.sharding(KVCache.PREVIOUS_AXES),) * config.num_layers
                        if config.key_shift else ()),
          next_logits=partitioner.sharding(("batch", "vocab")))
      params = jax.device_put(params, param_shardings(config, partitioner))
    else:
      self._state_shardings = None
    self.params = params
    self._compute_dtype = jnp.dtype(config.compute_dtype)
    self._cast = jax.jit(functools.partial(_cast_floating, dtype=self._compute_dtype))
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("window",), donate_argnums=(1,))
    self._generate = jax.jit(self._generate_fn, static_argnames=("sampling", "cache_window"), donate_argnums=(1,))

  @property
  def params(self) -> Any:
    """The parameters as given (not cast)."""
    return self._params

  @params.setter
  def params(self, params: Any) -> None:
    self._params = params
    self._compute_params = None

  def _weights(self) -> Any:
    """`params` in the compute dtype, cast once per assignment.

    Cast inside the jitted calls, every `append` and `generate` would convert every weight again
    (about 4% of a bfloat16 batch-16 call on CPU). Parameters already in the compute dtype are
    passed as they are, so float32 decoding keeps no second copy.
    """
    if self._compute_params is None:
      leaves = jax.tree_util.tree_leaves(nn.meta.unbox(self._params))
      differs = any(jnp.issubdtype(p.dtype, jnp.floating) and p.dtype != self._compute_dtype for p in leaves)
      self._compute_params = self._cast(self._params) if differs else self._params
    return self._compute_params

  # -- state ----------------------------------------------------------------------------------------

  def new_state(self) -> DecodeState:
    """Empty rows."""
    state = DecodeState(cache=KVCache.zeros(self.config, self.batch_size, self._allocated),
                        next_logits=jnp.zeros((self.batch_size, self.config.vocab_size), jnp.float32))
    if self._state_shardings is not None:
      state = jax.device_put(state, self._state_shardings)
    return state

  def reset(self, state: DecodeState, rows: Sequence[bool] | np.ndarray) -> DecodeState:
    """Empties the given rows (their next `append` starts a new sequence); the others are kept."""
    rows = self._put(np.asarray(rows, bool))
    with self._rules():
      return state.replace(cache=state.cache.replace(lengths=jnp.where(rows, 0, state.cache.lengths)))

  def lengths(self, state: DecodeState) -> np.ndarray:
    """Tokens each row holds."""
    return np.asarray(jax.device_get(state.cache.lengths))

  # -- prefill --------------------------------------------------------------------------------------

  def append(self, state: DecodeState, chunks: Sequence[Sequence[int] | np.ndarray | None]) -> DecodeState:
    """Appends tokens to rows (None or empty: the row is left alone) and updates their next logits.

    Raises:
      ValueError: If a row would exceed the capacity (nothing is written then).
    """
    if len(chunks) != self.batch_size:
      raise ValueError(f"append got {len(chunks)} rows for a batch of {self.batch_size}")
    rows = [np.asarray([] if c is None else c, np.int32).reshape(-1) for c in chunks]
    lengths = self.lengths(state)
    for b, row in enumerate(rows):
      if lengths[b] + len(row) > self.capacity:
        raise ValueError(f"row {b} holds {lengths[b]} tokens; {len(row)} more exceed the capacity {self.capacity}")
    done = 0
    longest = max(len(r) for r in rows)
    while done < longest:
      bucket = self._bucket(longest - done)
      tokens = np.full((self.batch_size, bucket), self.pad_id, np.int32)
      counts = np.zeros((self.batch_size,), np.int32)
      for b, row in enumerate(rows):
        piece = row[done:done + bucket]
        tokens[b, :len(piece)] = piece
        counts[b] = len(piece)
      # The chunk of every row that has one lies inside the window; a window past the cache widens it.
      need = int(max(lengths[b] + bucket for b in range(self.batch_size) if counts[b]))
      window = next((w for w in self._windows if w >= need), self._allocated + bucket - 1)
      with self._rules():
        state = self._prefill(self._weights(), state, self._put(tokens), self._put(counts), window=window)
      lengths = lengths + counts
      done += bucket
    return state

  def _bucket(self, remaining: int) -> int:
    """The next chunk's length: the smallest bucket that holds the rest, unless that would be more than
    half padding and a smaller bucket can take a first piece (a 500-token observation goes in two
    chunks of 256, not one of 1024)."""
    fits = [b for b in self.prefill_buckets if b >= remaining]
    below = [b for b in self.prefill_buckets if b <= remaining]
    if not fits:
      return self.prefill_buckets[-1]
    if fits[0] > 2 * remaining and below:
      return below[-1]
    return fits[0]

  def _prefill_fn(self, params, state: DecodeState, tokens, counts, *, window: int):
    params = unstack_layers(params, self.config.num_layers)  # Already in the compute dtype (`_weights`).
    written = counts > 0
    view = self._window(state.cache, window)
    logits, cache = self._model.apply({"params": params}, tokens, cache=view, chunk_lengths=counts,
                                      logits_at=jnp.maximum(counts - 1, 0))
    next_logits = jnp.where(written[:, None], logits, state.next_logits)
    return DecodeState(cache=self._unwindow(state.cache, cache, written), next_logits=next_logits)

  def _window(self, cache: KVCache, window: int) -> KVCache:
    """The first `window` slots of the cache (zeros appended when the window is wider)."""
    if window == self._allocated:
      return cache
    if window < self._allocated:
      cut = lambda x: x[:, :, :window]
    else:
      cut = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, window - self._allocated), (0, 0)])
    return KVCache(key=tuple(map(cut, cache.key)), value=tuple(map(cut, cache.value)), lengths=cache.lengths,
                   previous=cache.previous)

  def _unwindow(self, cache: KVCache, view: KVCache, rows: jax.Array) -> KVCache:
    """`cache` with the given rows' slots (and lengths) taken from the window `view` of it."""
    if view.max_length == self._allocated:
      return view
    size = min(view.max_length, self._allocated)
    keep = rows[:, None, None, None]

    def merge(full, part):
      part = jnp.where(keep, part[:, :, :size], full[:, :, :size])
      return part if size == self._allocated else jax.lax.dynamic_update_slice_in_dim(full, part, 0, axis=2)
    return KVCache(key=tuple(map(merge, cache.key, view.key)), value=tuple(map(merge, cache.value, view.value)),
                   lengths=jnp.where(rows, view.lengths, cache.lengths),
                   previous=tuple(jnp.where(rows[:, None], part, full) for full, part in zip(cache.previous,
                                                                                             view.previous)))

  # -- decode ---------------------------------------------------------------------------------------

  def generate(self, state: DecodeState, rng: jax.Array, *, active: Sequence[bool] | np.ndarray | None = None,
               sampling: SamplingParams = GREEDY, max_new_tokens: int | None = None
               ) -> tuple[DecodeState, GenerationResult]:
    """Generates for the active rows (default all) until each stops; returns the new state and the tokens.

    Args:
      state: Rows whose next logits are current (after `append`).
      rng: Key for sampling.
      active: Rows to generate for; the others are left as they are.
      sampling: Greedy or sampled decoding.
      max_new_tokens: At most this many tokens per row in this call (default and upper bound: the
        sampler's `max_new_tokens`; smaller values do not recompile).
    """
    limit = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if not 0 < limit <= self.max_new_tokens:
      raise ValueError(f"max_new_tokens must be in [1, {self.max_new_tokens}], got {limit}")
    active = np.ones((self.batch_size,), bool) if active is None else np.asarray(active, bool)
    # Every running row writes at most `limit` tokens, then one uncounted step at its length.
    lengths = self.lengths(state)
    need = max((min(int(n) + limit, self.capacity) + 1 for n, a in zip(lengths, active) if a and n < self.capacity),
               default=1)
    window = next(w for w in self._windows if w >= need)
    with self._rules():
      state, (tokens, logprobs, num, reasons) = self._generate(
          self._weights(), state, rng, self._put(active), jnp.int32(limit), sampling=sampling, cache_window=window)
    tokens, logprobs, num, reasons = jax.device_get((tokens, logprobs, num, reasons))
    return state, GenerationResult(np.asarray(tokens), np.asarray(logprobs), np.asarray(num), np.asarray(reasons))

  def _generate_fn(self, params, state: DecodeState, rng, active, limit, *, sampling: SamplingParams,
                   cache_window: int):
    batch, width = self.batch_size, self.max_new_tokens
    # Split once, outside the loop: slicing the stacked weights in its body would copy them every step.
    params = unstack_layers(params, self.config.num_layers)  # Already in the compute dtype (`_weights`).
    whole_cache = state.cache
    full = state.cache.lengths >= self.capacity
    # Rows that do not run may lie past the window: their (uncounted) writes are not kept.
    state = state.replace(cache=self._window(state.cache, cache_window))
    stops = jnp.asarray(self._stop_table)
    stop_lengths = jnp.asarray(self._stop_lengths)
    window = stops.shape[1]
    reasons = jnp.where(active, jnp.where(full, StopReason.CAPACITY, 0), StopReason.NOT_RUN).astype(jnp.int32)
    init = dict(step=jnp.int32(0), state=state, rng=rng, done=~active | full,
                # `window` columns of padding in front, so the stop check can always look back.
                tokens=jnp.full((batch, window + width), -1, jnp.int32),
                logprobs=jnp.zeros((batch, width), jnp.float32), num=jnp.zeros((batch,), jnp.int32),
                reasons=reasons)

    def cond(carry):
      return (carry["step"] < limit) & ~jnp.all(carry["done"])

    def body(carry):
      step, state, done = carry["step"], carry["state"], carry["done"]
      rng, key = jax.random.split(carry["rng"])
      token = choose_tokens(state.next_logits, key, sampling)
      logprob = (jnp.take_along_axis(state.next_logits, token[:, None], axis=-1)[:, 0]
                 - jax.nn.logsumexp(state.next_logits, axis=-1))
      running = ~done
      token = jnp.where(running, token, self.pad_id)
      tokens = jax.lax.dynamic_update_slice_in_dim(carry["tokens"], jnp.where(running, token, -1)[:, None],
                                                   window + step, axis=1)
      logprobs = jax.lax.dynamic_update_slice_in_dim(carry["logprobs"], jnp.where(running, logprob, 0.0)[:, None],
                                                     step, axis=1)
      num = carry["num"] + running
      logits, cache = self._model.apply({"params": params}, token[:, None], cache=state.cache,
                                        chunk_lengths=running.astype(jnp.int32), logits_at=jnp.zeros_like(num))
      state = DecodeState(cache=cache, next_logits=jnp.where(running[:, None], logits, state.next_logits))
      recent = jax.lax.dynamic_slice_in_dim(tokens, step + 1, window, axis=1)  # The last `window` tokens.
      matches = jnp.all((stops[None] == recent[:, None]) | (stops[None] < 0), axis=-1) & (stop_lengths > 0)[None]
      stopped = jnp.any(matches & (stop_lengths[None] <= num[:, None]), axis=-1)
      eos = (token == self.eos_id) if self.eos_id is not None else jnp.zeros_like(running)
      reason = jnp.select([stopped, eos, cache.lengths >= self.capacity, num >= limit],
                          [StopReason.STOP_SEQUENCE, StopReason.END_OF_SEQUENCE, StopReason.CAPACITY,
                           StopReason.MAX_NEW_TOKENS], 0)
      newly_done = running & (reason > 0)
      return dict(step=step + 1, state=state, rng=rng, done=done | newly_done, tokens=tokens, logprobs=logprobs,
                  num=num, reasons=jnp.where(newly_done, reason, carry["reasons"]))

    out = jax.lax.while_loop(cond, body, init)
    tokens = out["tokens"][:, window:]
    tokens = jnp.where(tokens < 0, self.pad_id, tokens)
    state = out["state"].replace(cache=self._unwindow(whole_cache, out["state"].cache, active & ~full))
    return state, (tokens, out["logprobs"], out["num"], out["reasons"])

  # -- helpers --------------------------------------------------------------------------------------

  def _rules(self):
    """The mesh and logical rules, current while the jitted functions trace and run."""
    return contextlib.nullcontext() if self.partitioner is None else self.partitioner.activate()

  def _put(self, array: np.ndarray):
    if self.partitioner is None:
      return jnp.asarray(array)
    return jax.device_put(array, self.partitioner.data_sharding(np.ndim(array)))


def _cast_floating(params: Any, dtype) -> Any:
  """`params` (unboxed) with every floating-point leaf in `dtype`; integer leaves kept."""
  return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                      nn.meta.unbox(params))


@functools.lru_cache(maxsize=None)
def _abstract_boxed_params(config: TransformerConfig) -> Any:
  model = Decoder(config)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"])


def param_shardings(config: TransformerConfig, partitioner: Partitioner) -> Any:
  """The shardings training gives the model's parameters (from their logical axis names)."""
  return partitioner.shardings(_abstract_boxed_params(config))
