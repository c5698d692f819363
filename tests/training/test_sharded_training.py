"""Sharded training on 8 fake CPU devices equals training on one device.

The parent pytest process has already imported JAX with one CPU device, so the
checks run in a subprocess started with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`. The subprocess prints one
JSON line of measurements; the tests below assert on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TOLERANCE = 1e-5

# Runs in the subprocess: loss and gradients, then one full train step, on one device and on the
# mesh {'data': 2, 'fsdp': 2, 'tensor': 2}; and the divisibility check of a model that does not fit.
_CHILD = textwrap.dedent(r"""
  from __future__ import annotations

  import json

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from masksearch_jax.errors import ConfigError
  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  from masksearch_jax.training import trainer
  from masksearch_jax.training.partitioning import Partitioner

  assert jax.device_count() == 8, jax.devices()
  # Every sharded logical axis divides its mesh axes: vocab 256 / tensor 2, embed 64 / fsdp 2,
  # heads 4 / tensor 2, mlp 128 / tensor 2, batch 8 / (data x fsdp) 4.
  RULES = (("batch", ("data", "fsdp")), ("vocab", "tensor"), ("embed", "fsdp"), ("mlp", "tensor"),
           ("heads", "tensor"), ("kv_heads", None), ("kv", None), ("length", None), ("layers", None))
  MESH = {"data": 2, "fsdp": 2, "tensor": 2}
  CONFIG = TransformerConfig(vocab_size=256, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=128,
                             qkv_bias=True, dtype="float32")
  BATCH, LENGTH = 8, 32


  def make_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, CONFIG.vocab_size, size=(BATCH, LENGTH + 1), dtype=np.int32)
    segment_ids = np.zeros((BATCH, LENGTH), np.int32)
    positions = np.zeros((BATCH, LENGTH), np.int32)
    for row in range(BATCH):
      # Two or three packed examples per row, then padding (segment 0).
      lengths = rng.integers(5, 12, size=rng.integers(2, 4))
      start = 0
      for segment, n in enumerate(lengths, start=1):
        n = min(int(n), LENGTH - start)
        segment_ids[row, start:start + n] = segment
        positions[row, start:start + n] = np.arange(n)
        start += n
    weights = (segment_ids > 0) & (rng.random((BATCH, LENGTH)) > 0.3)  # Prompt tokens weigh 0 too.
    return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:] * (segment_ids > 0),
            "decoder_loss_weights": weights.astype(np.float32), "decoder_segment_ids": segment_ids,
            "decoder_positions": positions}


  def loss_fn(params, batch):
    logits = Decoder(CONFIG).apply({"params": params}, batch["decoder_input_tokens"],
                                   positions=batch["decoder_positions"], segment_ids=batch["decoder_segment_ids"])
    sums = trainer.loss_sums(logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], z_loss=1e-4)
    return sums["loss"] / sums["weight"]


  def max_diffs(a, b):
    # The largest absolute difference over all leaves, and the largest relative to the leaf's scale.
    worst_abs, worst_rel = 0.0, 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      assert x.shape == y.shape, (x.shape, y.shape)
      diff = float(np.max(np.abs(x - y)))
      worst_abs = max(worst_abs, diff)
      worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(x))), 1e-12))
    return worst_abs, worst_rel


  def fully_replicated(x):
    return x.sharding.is_fully_replicated


  out = {}
  one = jax.devices()[0]
  batch = make_batch()
  boxed = Decoder(CONFIG).init(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))["params"]
  params = jax.device_put(nn.unbox(boxed), one)

  # -- loss and gradients ----------------------------------------------------------------------
  loss_1, grads_1 = jax.jit(jax.value_and_grad(loss_fn))(params, jax.device_put(batch, one))
  assert all(leaf.sharding.device_set == {one} for leaf in jax.tree_util.tree_leaves(grads_1))

  partitioner = Partitioner(mesh_axes=MESH, logical_axis_rules=RULES)
  with partitioner.activate():
    partitioner.check_divisibility(boxed)
    partitioner.check_batch(BATCH)
    param_shardings = partitioner.shardings(boxed)
    batch_shardings = {k: partitioner.data_sharding(v.ndim) for k, v in batch.items()}
    sharded_params = jax.device_put(params, param_shardings)
    sharded_batch = jax.device_put(batch, batch_shardings)
    grad_step = jax.jit(jax.value_and_grad(loss_fn), in_shardings=(param_shardings, batch_shardings),
                        out_shardings=(None, param_shardings))
    compiled = grad_step.lower(sharded_params, sharded_batch).compile()
    hlo = compiled.as_text()
    loss_8, grads_8 = compiled(sharded_params, sharded_batch)

  out["mesh"] = dict(partitioner.mesh.shape)
  out["loss_1"], out["loss_8"] = float(loss_1), float(loss_8)
  out["grad_abs"], out["grad_rel"] = max_diffs(grads_1, grads_8)
  out["grad_scale"] = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads_1))
  out["grad_leaves"] = len(jax.tree_util.tree_leaves(grads_8))
  out["embedding_spec"] = [list(a) if isinstance(a, tuple) else a for a in sharded_params["embedding"].sharding.spec]
  out["embedding_shard_shape"] = list(sharded_params["embedding"].addressable_shards[0].data.shape)
  out["embedding_grad_spec"] = [list(a) if isinstance(a, tuple) else a for a in grads_8["embedding"].sharding.spec]
  out["query_kernel_shard_shape"] = list(
      sharded_params["layers"]["attention"]["query_kernel"].addressable_shards[0].data.shape)
  out["batch_shard_shape"] = list(sharded_batch["decoder_input_tokens"].addressable_shards[0].data.shape)
  out["replicated_params"] = sorted(
      "/".join(str(getattr(k, "key", k)) for k in path)
      for path, leaf in jax.tree_util.tree_flatten_with_path(sharded_params)[0] if fully_replicated(leaf))
  out["collectives"] = sorted({op for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
                                              "collective-permute") if op in hlo})

  # -- a full train step ---------------------------------------------------------------------------
  # Clipping then SGD with momentum: the update is linear in the gradients, so it shows their
  # agreement directly. (Adam's first update, lr * g / (|g| + eps), turns rounding-level
  # differences of near-zero gradients into differences of up to lr: not a sharding matter.)
  transform = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5, momentum=0.9))

  def init_boxed(rng):
    boxed = Decoder(CONFIG).init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]
    return {"params": boxed, "opt_state": transform.init(boxed), "step": jnp.zeros((), jnp.int32)}

  step = trainer.make_train_step(CONFIG, transform, z_loss=1e-4)
  state_1 = jax.device_put(nn.unbox(init_boxed(jax.random.PRNGKey(0))), one)
  new_1, metrics_1 = jax.jit(step)(state_1, jax.device_put(batch, one))
  with partitioner.activate():
    state_shardings = partitioner.shardings(jax.eval_shape(init_boxed, jax.random.PRNGKey(0)))
    sharded_step = jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                           out_shardings=(state_shardings, None))
    new_8, metrics_8 = sharded_step(jax.device_put(state_1, state_shardings), jax.device_put(batch, batch_shardings))
  params_abs, params_rel = max_diffs(new_1["params"], new_8["params"])
  out["step"] = {
      "loss_1": float(metrics_1["loss"]), "loss_8": float(metrics_8["loss"]),
      "grad_norm_1": float(metrics_1["grad_norm"]), "grad_norm_8": float(metrics_8["grad_norm"]),
      "params_abs": params_abs, "params_rel": params_rel,
      "opt_state_abs": max_diffs(new_1["opt_state"], new_8["opt_state"])[0],
      "moved": max_diffs(state_1["params"], new_1["params"])[0], "step_8": int(new_8["step"]),
      "new_embedding_sharded": not fully_replicated(new_8["params"]["embedding"]),
  }

  # -- shapes that do not divide are named before any step --------------------------------------
  bad = TransformerConfig(vocab_size=256, num_layers=2, d_model=48, num_heads=3, num_kv_heads=1, mlp_dim=128)
  with partitioner.activate():
    abstract = jax.eval_shape(lambda rng: Decoder(bad).init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"],
                              jax.random.PRNGKey(0))
    try:
      partitioner.check_divisibility(abstract)
      out["divisibility_error"] = None
    except ConfigError as error:
      out["divisibility_error"] = str(error)

  print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
  """Runs `_CHILD` on 8 fake CPU devices and returns what it measured."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             MASKSEARCH_CACHE=os.environ.get("MASKSEARCH_CACHE") or str(tmp_path_factory.mktemp("cache")))
  result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
  assert len(lines) == 1, result.stdout[-2000:]
  results = json.loads(lines[0][len("RESULT "):])
  print("measured on 8 devices vs 1:", json.dumps(results))  # Shown with a failing test (or with -s).
  return results


def test_loss_and_gradients_match_one_device(sharded_results):
  r = sharded_results
  assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert r["loss_1"] > 1.0  # Near log(256) at initialisation: a real loss, not a zero.
  assert abs(r["loss_1"] - r["loss_8"]) <= TOLERANCE
  assert r["grad_leaves"] >= 10
  assert r["grad_scale"] > 1e-3  # The gradients are not all zero, so comparing them means something.
  assert r["grad_abs"] <= TOLERANCE, r
  assert r["grad_rel"] <= 1e-4, r


def test_parameters_and_batch_are_really_sharded(sharded_results):
  r = sharded_results
  # embedding [vocab 256, embed 64]: vocab over tensor, embed over fsdp.
  assert r["embedding_spec"] == ["tensor", "fsdp"]
  assert r["embedding_shard_shape"] == [128, 32]
  assert r["embedding_grad_spec"] == ["tensor", "fsdp"]
  # query kernel [layers 2, embed 64, heads 4, kv 16]: embed over fsdp, heads over tensor.
  assert r["query_kernel_shard_shape"] == [2, 32, 2, 16]
  assert r["batch_shard_shape"] == [2, 32]  # 8 rows over data x fsdp = 4.
  # Only the kv-head projections' biases have no sharded axis ([layers, kv_heads, kv]).
  assert r["replicated_params"] == ["layers/attention/key_bias", "layers/attention/value_bias"]
  assert "all-reduce" in r["collectives"] or "reduce-scatter" in r["collectives"], r["collectives"]


def test_train_step_matches_one_device(sharded_results):
  r = sharded_results["step"]
  assert r["step_8"] == 1
  assert abs(r["loss_1"] - r["loss_8"]) <= TOLERANCE
  assert abs(r["grad_norm_1"] - r["grad_norm_8"]) <= TOLERANCE
  assert r["moved"] > 1e-4  # The step changed the parameters.
  assert r["params_abs"] <= TOLERANCE, r
  assert r["opt_state_abs"] <= TOLERANCE, r
  assert r["new_embedding_sharded"]


def test_check_divisibility_names_the_parameter_and_the_mesh_axis(sharded_results):
  message = sharded_results["divisibility_error"]
  assert message is not None, "3 heads on tensor=2 passed the divisibility check"
  # The first parameter (in path order) with a 'heads' axis: out_kernel [layers, heads, kv, embed].
  assert "parameter layers/attention/out_kernel: dimension 1 ('heads', size 3)" in message
  assert "mesh axis tensor (size 2)" in message
