"""Two local processes with gloo collectives train like one process on the same global batch.

Each test starts real processes on localhost (the coordinator on a free port),
as a two-host run would: `multihost.initialize(...)`, then every process feeds
its own half of each global batch.

The first test runs `make_train_step` directly, with 2 fake CPU devices per
process (data parallel across the processes, fsdp inside each one), and SGD
with momentum: Adam's first update, lr * g / (|g| + eps), can turn
rounding-level differences of near-zero gradients (summed in another order
across processes) into differences of up to the learning rate, which says
nothing about the data parallelism under test. The second runs the real
`masksearch train` on two processes against a one-process run fed the same
global batches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np

TOLERANCE = 1e-5
TIMEOUT = 240  # Seconds for one group of processes (a loaded 2-core machine is slow to compile).

# One process of a data-parallel run of `make_train_step` on generated global batches.
_WORKER = textwrap.dedent(r"""
  from __future__ import annotations

  import json
  import sys

  import numpy as np

  from masksearch_jax.training import multihost

  args = json.loads(sys.argv[1])
  if args["coordinator"]:
    assert multihost.initialize(coordinator_address=args["coordinator"], num_processes=args["num_processes"],
                                process_id=args["process_id"])

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from jax.experimental import multihost_utils

  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  from masksearch_jax.training import trainer
  from masksearch_jax.training.partitioning import Partitioner

  assert jax.process_count() == args["num_processes"] and jax.process_index() == args["process_id"]
  assert jax.local_device_count() == 2
  CONFIG = TransformerConfig(vocab_size=128, num_layers=2, d_model=32, num_heads=2, num_kv_heads=1, mlp_dim=64,
                             qkv_bias=True, tie_embeddings=True, dtype="float32")
  BATCH, LENGTH, STEPS = 8, 16, 3


  def global_batch(step):
    rng = np.random.default_rng(100 + step)
    tokens = rng.integers(2, CONFIG.vocab_size, size=(BATCH, LENGTH + 1), dtype=np.int32)
    segment_ids = np.where(np.arange(LENGTH) < 9, 1, 2).astype(np.int32) * np.ones((BATCH, 1), np.int32)
    segment_ids[:, -3:] = 0  # Padding.
    positions = np.where(segment_ids == 1, np.arange(LENGTH), np.arange(LENGTH) - 9) * (segment_ids > 0)
    weights = ((segment_ids > 0) & (rng.random((BATCH, LENGTH)) > 0.25)).astype(np.float32)
    return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
            "decoder_loss_weights": weights, "decoder_segment_ids": segment_ids,
            "decoder_positions": positions.astype(np.int32)}


  # data: -1 spreads over the processes; fsdp: 2 over the two devices of each process.
  partitioner = Partitioner(mesh_axes={"data": -1, "fsdp": 2, "tensor": 1})
  transform = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5, momentum=0.9))


  def init_boxed(rng):
    boxed = Decoder(CONFIG).init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]
    return {"params": boxed, "opt_state": transform.init(boxed), "step": jnp.zeros((), jnp.int32)}


  rows = BATCH // jax.process_count()
  first_row = jax.process_index() * rows
  with partitioner.activate():
    shardings = partitioner.shardings(jax.eval_shape(init_boxed, jax.random.PRNGKey(0)))
    state = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=shardings)(jax.random.PRNGKey(0))
    initial_params = state["params"]
    step = jax.jit(trainer.make_train_step(CONFIG, transform, z_loss=1e-4), in_shardings=(shardings, None),
                   out_shardings=(shardings, None))
    losses = []
    for i in range(STEPS):
      # This process's half of the global batch, as the input pipeline's shard would give it.
      local = {k: v[first_row:first_row + rows] for k, v in global_batch(i).items()}
      batch = trainer._global_batch(local, partitioner)  # pylint: disable=protected-access
      assert batch["decoder_input_tokens"].shape == (BATCH, LENGTH)
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    moved = jax.jit(lambda a, b: optax.tree.norm(jax.tree.map(jnp.subtract, a, b)))(initial_params, state["params"])
  params = multihost_utils.process_allgather(state["params"], tiled=True)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  np.savez(args["out"], **flat)
  with open(args["out"] + ".json", "w") as f:
    json.dump({"losses": losses, "step": int(state["step"].addressable_data(0)),
               "moved": float(moved.addressable_data(0)),
               "mesh": dict(partitioner.mesh.shape)}, f)
""")


# A one-host `masksearch train` whose input is the global batch of a two-host run: each batch is
# host 0's shard then host 1's (the order of the processes' devices on the mesh).
_ONE_HOST_OF_TWO = textwrap.dedent(r"""
  from __future__ import annotations

  import sys

  import numpy as np

  from masksearch_jax import cli
  from masksearch_jax.data import input_pipeline
  from masksearch_jax.training import trainer


  def two_host_batches(cfg, start_step):
    shards = [input_pipeline.get_dataset(cfg, shard_id=i, num_shards=2, num_epochs=None,
                                         start_step=start_step).as_numpy_iterator() for i in range(2)]
    for step, parts in enumerate(zip(*shards)):
      if step == 0:  # The hosts read different examples (else this test could not tell their order).
        assert not np.array_equal(parts[0]["decoder_target_tokens"], parts[1]["decoder_target_tokens"])
      yield {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


  trainer._batches = two_host_batches  # pylint: disable=protected-access
  sys.exit(cli.main(sys.argv[1:]))
""")


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  # conftest points MASKSEARCH_CACHE at this session's temporary directory; the children share it.
  assert os.environ.get("MASKSEARCH_CACHE"), "MASKSEARCH_CACHE is not set"
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _run_together(commands: list[list[str]], env: dict[str, str], log_dir: Path) -> list[tuple[int, str, str]]:
  """Starts every command at once, waits for all; kills them all on any failure or timeout.

  Returns:
    (exit code, stdout, stderr) per command.
  """
  log_dir.mkdir(parents=True, exist_ok=True)
  processes, logs = [], []
  try:
    for i, command in enumerate(commands):
      out, err = open(log_dir / f"process{i}.out", "w+"), open(log_dir / f"process{i}.err", "w+")
      logs.append((out, err))
      processes.append(subprocess.Popen(command, env=env, cwd=log_dir, stdout=out, stderr=err, text=True))
    for process in processes:
      process.wait(timeout=TIMEOUT)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
  results = []
  for process, (out, err) in zip(processes, logs):
    out.seek(0)
    err.seek(0)
    results.append((process.returncode, out.read(), err.read()))
    out.close()
    err.close()
  return results


def _worker_command(out: Path, coordinator: str | None, num_processes: int, process_id: int) -> list[str]:
  args = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id, "out": str(out)}
  return [sys.executable, "-c", _WORKER, json.dumps(args)]


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
  assert sorted(a) == sorted(b)
  return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def test_two_processes_train_like_one(tmp_path):
  port = _free_port()
  two = _run_together([_worker_command(tmp_path / f"host{i}.npz", f"127.0.0.1:{port}", 2, i) for i in range(2)],
                      _env(2), tmp_path / "two")
  for code, _, err in two:
    assert code == 0, err[-3000:]
  one = _run_together([_worker_command(tmp_path / "single.npz", None, 1, 0)], _env(2), tmp_path / "one")
  assert one[0][0] == 0, one[0][2][-3000:]

  single, single_meta = dict(np.load(tmp_path / "single.npz")), json.loads((tmp_path / "single.npz.json").read_text())
  hosts = [dict(np.load(tmp_path / f"host{i}.npz")) for i in range(2)]
  metas = [json.loads((tmp_path / f"host{i}.npz.json").read_text()) for i in range(2)]
  assert single_meta["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1}
  assert metas[0]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert [m["step"] for m in metas] == [3, 3] and single_meta["step"] == 3
  assert len(single) >= 10
  # Training moved the parameters (so equal parameters are not just equal initialisations).
  assert single_meta["moved"] > 0.1 and abs(metas[0]["moved"] - single_meta["moved"]) <= TOLERANCE
  for meta in metas:
    assert np.allclose(meta["losses"], single_meta["losses"], atol=TOLERANCE, rtol=0), (meta, single_meta)
  assert _max_difference(hosts[0], hosts[1]) == 0.0  # The hosts hold one global array.
  assert _max_difference(hosts[0], single) <= TOLERANCE


def _flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _tree_bytes(directory: Path) -> int:
  return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_masksearch_train_on_two_processes(tiny_run_gin, tmp_path):
  """The real CLI on two processes: one set of checkpoints, the parameters of one host on their batches."""
  from masksearch_jax.training import checkpoints

  steps = 4

  def train_args(model_dir: Path) -> list[str]:
    # The run file's AdamW, with the warm-up's learning rate 0 at the first step (measured: the
    # parameters agree to about 1e-7).
    return ["train", "--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin", f"--gin_file={tiny_run_gin}",
            "--gin.MIXTURE_OR_TASK_NAME='ramp_mixed_1to4'", f"--gin.TRAIN_STEPS={steps}",
            "--gin.CHECKPOINT_PERIOD=2", f"--gin.MODEL_DIR='{model_dir}'"]

  # The one-host reference first: it also fills the vocabulary cache that both hosts then read.
  reference, two = tmp_path / "reference", tmp_path / "two"
  (code, out, err), = _run_together([[sys.executable, "-c", _ONE_HOST_OF_TWO, *train_args(reference)]], _env(1),
                                    tmp_path / "reference_logs")
  assert code == 0, err[-3000:]
  assert f"trained to step {steps}" in out
  port = _free_port()
  hosts = _run_together([[sys.executable, "-m", "masksearch_jax", *train_args(two),
                          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]
                         for i in range(2)], _env(1), tmp_path / "two_logs")
  for code, out, err in hosts:
    assert code == 0, err[-3000:]
    assert f"trained to step {steps}" in out

  # Checkpoints were written once: one directory, each step once, nothing half-written, and no
  # more bytes than the one-host run wrote (each host writes its part of the arrays).
  assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["2", "4"]
  assert checkpoints.TrainingCheckpoints(two / "checkpoints").steps() == [2, 4]
  meta = json.loads((two / "checkpoints" / "4" / "meta" / "metadata").read_text())
  assert meta["step"] == 4 and meta["stage"] == 1
  written, reference_written = _tree_bytes(two / "checkpoints" / "4" / "state"), _tree_bytes(
      reference / "checkpoints" / "4" / "state")
  assert written < 1.25 * reference_written, (written, reference_written)
  assert (two / "config.gin").is_file()
  assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1  # Only process 0 logs.

  # load_params reads the two-host checkpoint onto this one device.
  two_params, reference_params = (_flat(checkpoints.load_params(d / "checkpoints")) for d in (two, reference))
  assert len(two_params) >= 10
  assert _max_difference(two_params, reference_params) <= TOLERANCE
