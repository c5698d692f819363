"""The KV-cache sampler: greedy decoding equals the full forward pass, stops inside the loop, continues a row
from its cache, compiles once per shape, and runs sharded like training."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masksearch_jax.models.sampler import GREEDY, Sampler, SamplingParams, StopReason, choose_tokens
from masksearch_jax.models.transformer import Decoder, TransformerConfig

CONFIG = TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=64,
                           qkv_bias=True)
PROMPTS = [np.arange(2, 9), np.arange(10, 13), np.arange(20, 50)]


@pytest.fixture(scope="module")
def params():
  # Larger-than-default weights make the greedy path visit many different tokens.
  boxed = Decoder(CONFIG).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  return jax.tree_util.tree_map(lambda x: x * 3.0, nn.unbox(boxed))


def forward_logprobs(params, tokens) -> np.ndarray:
  logits = Decoder(CONFIG).apply({"params": params}, jnp.asarray(tokens)[None])[0]
  return np.asarray(jax.nn.log_softmax(logits, axis=-1))


def make_sampler(params, **kwargs) -> Sampler:
  options = dict(batch_size=3, capacity=96, max_new_tokens=24, prefill_buckets=(8, 32))
  options.update(kwargs)
  return Sampler(CONFIG, params, **options)


def greedy(params, **kwargs):
  sampler = make_sampler(params, **kwargs)
  return sampler, *sampler.generate(sampler.append(sampler.new_state(), PROMPTS), jax.random.PRNGKey(0))


def assert_matches_forward(params, context, generated, logprobs):
  """Each generated token is the forward pass's argmax after its context, with the same log-probability."""
  full = np.concatenate([context, generated])
  logp = forward_logprobs(params, full)
  positions = np.arange(len(context) - 1, len(full) - 1)
  np.testing.assert_array_equal(np.argmax(logp[positions], axis=-1), generated)
  np.testing.assert_allclose(logp[positions, generated], logprobs, atol=1e-4, rtol=0)


def test_greedy_equals_forward_argmax_and_logprobs(params):
  _, _, result = greedy(params)
  assert list(result.num_tokens) == [24, 24, 24]
  assert list(result.stop_reasons) == [StopReason.MAX_NEW_TOKENS] * 3
  assert len(set(result.row_tokens(0).tolist())) > 3, "a degenerate model would make this test weak"
  for b, prompt in enumerate(PROMPTS):
    assert_matches_forward(params, prompt, result.row_tokens(b), result.row_logprobs(b))


def test_stop_sequence_and_end_of_sequence_stop_each_row_inside_the_loop(params):
  _, _, free = greedy(params)
  row0 = free.row_tokens(0)
  stop = row0[5:7].tolist()  # Row 0 writes this pair at steps 6 and 7.
  first_stop = next(i for i in range(1, len(row0)) if row0[i - 1:i + 1].tolist() == stop) + 1
  eos = int(free.row_tokens(2)[9])
  first_eos = free.row_tokens(2).tolist().index(eos) + 1
  _, state, result = greedy(params, stop_sequences=[stop, [999, 998]], eos_id=eos)
  assert result.num_tokens[0] == first_stop
  assert result.stop_reasons[0] == StopReason.STOP_SEQUENCE
  np.testing.assert_array_equal(result.row_tokens(0)[-2:], stop)
  assert result.num_tokens[2] <= first_eos
  assert result.stop_reasons[2] in (StopReason.END_OF_SEQUENCE, StopReason.STOP_SEQUENCE)
  assert result.row_tokens(2)[-1] == eos or result.row_tokens(2)[-2:].tolist() == stop
  # A stopped row's cache holds its prompt and every token it wrote, stop tokens included.
  lengths = np.asarray(state.cache.lengths)
  for b, prompt in enumerate(PROMPTS):
    assert lengths[b] == len(prompt) + result.num_tokens[b]
  # Padding after a stopped row.
  assert np.all(result.tokens[0, result.num_tokens[0]:] == 0)


def test_a_row_continues_from_its_cache_after_an_appended_observation(params):
  sampler, state, first = greedy(params, max_new_tokens=10)
  observation = [np.array([40, 41, 42, 43, 44]), None, np.array([60, 61])]
  state = sampler.append(state, observation)
  # Row 1 sits this turn out: it keeps its cache and writes nothing.
  state, second = sampler.generate(state, jax.random.PRNGKey(1), active=[True, False, True])
  assert second.num_tokens[1] == 0 and second.stop_reasons[1] == StopReason.NOT_RUN
  for b in (0, 2):
    context = np.concatenate([PROMPTS[b], first.row_tokens(b), observation[b]])
    assert_matches_forward(params, context, second.row_tokens(b), second.row_logprobs(b))
  state, third = sampler.generate(state, jax.random.PRNGKey(2), active=[False, True, False])
  context = np.concatenate([PROMPTS[1], first.row_tokens(1)])
  assert_matches_forward(params, context, third.row_tokens(1), third.row_logprobs(1))


def test_a_row_stops_when_its_cache_is_full_and_append_refuses_to_overflow(params):
  sampler = make_sampler(params, capacity=40)
  state = sampler.append(sampler.new_state(), PROMPTS)  # Row 2 holds 30 tokens.
  state, result = sampler.generate(state, jax.random.PRNGKey(0))
  assert result.num_tokens[2] == 10 and result.stop_reasons[2] == StopReason.CAPACITY
  assert result.stop_reasons[0] == StopReason.MAX_NEW_TOKENS
  assert_matches_forward(params, PROMPTS[2], result.row_tokens(2), result.row_logprobs(2))
  before = sampler.lengths(state)
  with pytest.raises(ValueError, match="row 2 holds 40 tokens; 1 more exceed the capacity 40"):
    sampler.append(state, [None, None, [5]])
  np.testing.assert_array_equal(sampler.lengths(state), before)


def test_long_prompts_go_in_several_chunks(params):
  prompt = (np.arange(70) * 7) % 97
  sampler = make_sampler(params, prefill_buckets=(8, 16))
  state, result = sampler.generate(sampler.append(sampler.new_state(), [prompt, None, prompt[:3]]),
                                   jax.random.PRNGKey(0), active=[True, False, True], max_new_tokens=6)
  assert_matches_forward(params, prompt, result.row_tokens(0), result.row_logprobs(0))
  assert_matches_forward(params, prompt[:3], result.row_tokens(2), result.row_logprobs(2))


def test_calls_with_other_prompt_lengths_and_limits_do_not_recompile(params):
  sampler = make_sampler(params)
  for lengths, limit in [((3, 5, 7), 24), ((1, 8, 2), 5), ((20, 9, 31), 12), ((4, 4, 4), 1)]:
    prompts = [np.arange(1, n + 1) for n in lengths]
    sampler.generate(sampler.append(sampler.new_state(), prompts), jax.random.PRNGKey(0), max_new_tokens=limit)
  assert sampler._generate._cache_size() == 1
  assert sampler._prefill._cache_size() == 2  # One per bucket used (8 and 32).


def test_sampling_is_seeded_and_follows_top_k_and_top_p(params):
  sampler = make_sampler(params)
  sampling = SamplingParams(temperature=1.0, top_k=5)

  def run(seed):
    return sampler.generate(sampler.append(sampler.new_state(), PROMPTS), jax.random.PRNGKey(seed),
                            sampling=sampling)[1]

  a, b, c = run(0), run(0), run(1)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  # Every sampled token is among the model's 5 most likely after its context, and its log-probability is the
  # model's own (before temperature and top-k).
  for b_, prompt in enumerate(PROMPTS):
    full = np.concatenate([prompt, a.row_tokens(b_)])
    logp = forward_logprobs(params, full)
    positions = np.arange(len(prompt) - 1, len(full) - 1)
    top5 = np.argsort(-logp[positions], axis=-1)[:, :5]
    assert all(t in row for t, row in zip(a.row_tokens(b_), top5))
    np.testing.assert_allclose(logp[positions, a.row_tokens(b_)], a.row_logprobs(b_), atol=1e-4, rtol=0)


def test_choose_tokens_filters():
  logits = jnp.log(jnp.array([[0.6, 0.25, 0.1, 0.05]] * 2000))
  rng = jax.random.PRNGKey(3)
  assert set(np.asarray(choose_tokens(logits, rng, GREEDY)).tolist()) == {0}
  top2 = np.asarray(choose_tokens(logits, rng, SamplingParams(top_k=2)))
  assert set(top2.tolist()) == {0, 1}
  assert abs(np.mean(top2 == 0) - 0.6 / 0.85) < 0.04
  # Nucleus 0.8: 0.6 alone does not reach 0.8, 0.6 + 0.25 does; so tokens 0 and 1.
  assert set(np.asarray(choose_tokens(logits, rng, SamplingParams(top_p=0.8))).tolist()) == {0, 1}
  assert set(np.asarray(choose_tokens(logits, rng, SamplingParams(top_p=0.5))).tolist()) == {0}
  everything = np.asarray(choose_tokens(logits, rng, SamplingParams()))
  assert set(everything.tolist()) == {0, 1, 2, 3}
  assert abs(np.mean(everything == 3) - 0.05) < 0.02
  # A high temperature flattens the distribution.
  hot = np.asarray(choose_tokens(logits, rng, SamplingParams(temperature=100.0)))
  assert abs(np.mean(hot == 3) - 0.25) < 0.04
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=0.0)


_SHARDED_CHILD = textwrap.dedent(r"""
  import json
  import flax.linen as nn
  import jax, jax.numpy as jnp, numpy as np
  from masksearch_jax.models.sampler import Sampler, SamplingParams
  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  from masksearch_jax.training.partitioning import Partitioner

  assert jax.device_count() == 8
  config = TransformerConfig(vocab_size=128, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=64)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree_util.tree_map(lambda x: x * 3.0, params)
  prompts = [np.arange(1 + b, 6 + 2 * b) for b in range(4)]
  out = {}
  for name, partitioner in [("single", None),
                            ("mesh", Partitioner(mesh_axes={"data": 2, "fsdp": 2, "tensor": 2}))]:
    sampler = Sampler(config, params, batch_size=4, capacity=64, max_new_tokens=12, prefill_buckets=(16,),
                      partitioner=partitioner)
    state = sampler.append(sampler.new_state(), prompts)
    state, greedy = sampler.generate(state, jax.random.PRNGKey(0))
    state = sampler.append(state, [[7, 8]] * 4)
    state, sampled = sampler.generate(state, jax.random.PRNGKey(1), sampling=SamplingParams(top_k=4))
    out[name] = dict(greedy=greedy.tokens.tolist(), logprobs=greedy.logprobs.tolist(), sampled=sampled.tokens.tolist(),
                     cache_devices=len(state.cache.key[0].sharding.device_set),
                     cache_spec=str(state.cache.key[0].sharding.spec) if partitioner else None)
  print(json.dumps(out))
""")


def test_sharded_sampler_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SHARDED_CHILD], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  single, mesh = out["single"], out["mesh"]
  assert mesh["cache_devices"] == 8
  assert "data" in mesh["cache_spec"]
  assert mesh["greedy"] == single["greedy"]
  np.testing.assert_allclose(mesh["logprobs"], single["logprobs"], atol=1e-4)
  assert mesh["sampled"] == single["sampled"]


def test_long_caches_decode_on_windows_and_still_equal_the_forward_pass():
  """A cache of 1,100 slots runs on a 512-slot window while rows are short, then on the whole cache.

  The weights are as initialised but for a larger output layer: the module's all-weights-times-three
  model has logits so large that float32 rounding over 700-token contexts reaches 1e-4 by itself.
  """
  boxed = Decoder(CONFIG).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  params = nn.unbox(boxed)
  params = dict(params, lm_head=params["lm_head"] * 3.0)
  sampler = make_sampler(params, capacity=1100, max_new_tokens=16, prefill_buckets=(64, 256))
  assert sampler._windows[0] == 512 and sampler._windows[-1] > 1100
  rng = np.random.default_rng(0)
  state = sampler.append(sampler.new_state(), PROMPTS)
  contexts = [list(p) for p in PROMPTS]
  for turn in range(4):
    active = [True, turn % 2 == 0, True]  # Row 1 sits every other turn out.
    state, result = sampler.generate(state, jax.random.PRNGKey(turn), active=active)
    for b in range(3):
      if active[b]:
        assert_matches_forward(params, np.array(contexts[b]), result.row_tokens(b), result.row_logprobs(b))
        contexts[b] += result.row_tokens(b).tolist()
    # Observations long enough to push row 0 past the first window (512 slots) by the last turn.
    observations = [rng.integers(1, 97, n).tolist() for n in (200, 3, 40)]
    state = sampler.append(state, observations)
    for b in range(3):
      contexts[b] += observations[b]
  assert sampler.lengths(state).tolist() == [len(c) for c in contexts]
  assert max(len(c) for c in contexts) > 512


def test_key_shift_decoding_carries_the_previous_token_across_chunks_turns_and_windows():
  """With `key_shift` a chunk's first key needs the row's token before it: prompts in several chunks,
  turns after observations (one row sitting a turn out) and windowed caches still equal the forward
  pass."""
  config = dataclasses.replace(CONFIG, key_shift=True)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  attention = dict(params["layers"]["attention"])
  attention["key_shift"] = jax.random.normal(jax.random.PRNGKey(1), attention["key_shift"].shape)
  params = {**params, "layers": {**params["layers"], "attention": attention},
            "lm_head": params["lm_head"] * 3.0}

  def check(context, tokens, logprobs):
    full = np.concatenate([context, tokens])
    logits = Decoder(config).apply({"params": params}, jnp.asarray(full)[None])[0]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    at = np.arange(len(context) - 1, len(full) - 1)
    np.testing.assert_array_equal(np.argmax(logp[at], axis=-1), tokens)
    np.testing.assert_allclose(logp[at, tokens], logprobs, atol=1e-4, rtol=0)

  sampler = Sampler(config, params, batch_size=3, capacity=1100, max_new_tokens=12, prefill_buckets=(8, 16))
  assert sampler._windows[0] == 512
  state = sampler.append(sampler.new_state(), PROMPTS)  # Row 2's 30 tokens go in two chunks.
  contexts = [list(p) for p in PROMPTS]
  rng = np.random.default_rng(0)
  for turn in range(3):
    active = [True, turn != 1, True]
    state, result = sampler.generate(state, jax.random.PRNGKey(turn), active=active)
    assert len(set(result.row_tokens(0).tolist())) > 2, "a degenerate model would make this test weak"
    for b in range(3):
      if active[b]:
        check(np.array(contexts[b]), result.row_tokens(b), result.row_logprobs(b))
        contexts[b] += result.row_tokens(b).tolist()
    observations = [rng.integers(1, 97, n).tolist() for n in (260, 5, 9)]  # Row 0 passes 512 slots.
    state = sampler.append(state, observations)
    for b in range(3):
      contexts[b] += observations[b]
  assert max(len(c) for c in contexts) > 512


def test_bfloat16_decoding_follows_the_bfloat16_forward_pass(params):
  """With bfloat16 compute (weights cast once before the loop) each token is the forward pass's choice up
  to bfloat16 rounding, with nearly its log-probability."""
  config = dataclasses.replace(CONFIG, dtype="bfloat16")
  sampler = Sampler(config, params, batch_size=3, capacity=96, max_new_tokens=24, prefill_buckets=(8, 32))
  state = sampler.new_state()
  # On CPU the cache stays float32 (its bfloat16 products would convert it every step).
  expected = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  assert all(a.dtype == expected for a in state.cache.key + state.cache.value)
  _, result = sampler.generate(sampler.append(state, PROMPTS), jax.random.PRNGKey(0))
  assert list(result.num_tokens) == [24, 24, 24]
  for b, prompt in enumerate(PROMPTS):
    generated = result.row_tokens(b)
    full = np.concatenate([prompt, generated])
    logp = np.asarray(jax.nn.log_softmax(Decoder(config).apply({"params": params}, jnp.asarray(full)[None])[0], -1))
    positions = np.arange(len(prompt) - 1, len(full) - 1)
    chosen = logp[positions, generated]
    assert np.all(chosen >= logp[positions].max(-1) - 0.1)
    np.testing.assert_allclose(chosen, result.row_logprobs(b), atol=0.1, rtol=0)


def test_bfloat16_weights_are_cast_once_per_assignment_of_params(params):
  config = dataclasses.replace(CONFIG, dtype="bfloat16")
  other = jax.tree_util.tree_map(lambda x: -x, params)
  sampler = Sampler(config, params, batch_size=3, capacity=96, max_new_tokens=8, prefill_buckets=(8, 32))
  casts = []
  cast = sampler._cast
  sampler._cast = lambda p: casts.append(p) or cast(p)

  def run(s):
    return s.generate(s.append(s.new_state(), PROMPTS), jax.random.PRNGKey(0))[1].tokens

  first = run(sampler)
  np.testing.assert_array_equal(run(sampler), first)
  assert len(casts) == 1 and casts[0] is params  # Two appends and two generates, one cast.
  assert sampler.params is params  # The parameters as given, not the cast copy.
  sampler.params = other  # As DAPO assigns the updated policy.
  fresh = Sampler(config, other, batch_size=3, capacity=96, max_new_tokens=8, prefill_buckets=(8, 32))
  np.testing.assert_array_equal(run(sampler), run(fresh))
  assert len(casts) == 2 and casts[1] is other
  assert not np.array_equal(run(sampler), first)  # The new weights are the ones decoding.
