"""Tests of the T5X-style trainer (masksearch_jax/training/trainer.py) and `masksearch train`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from masksearch_jax import cli
from masksearch_jax.errors import ConfigError
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training import checkpoints, trainer


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _train_args(gin_file, model_dir, steps, *extra):
  return ["train", "--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin", f"--gin_file={gin_file}",
          "--gin.MIXTURE_OR_TASK_NAME='ramp_mixed_1to4'", f"--gin.TRAIN_STEPS={steps}",
          f"--gin.MODEL_DIR='{model_dir}'", *extra]


def _events(directory: Path) -> dict[str, list[tuple[int, float]]]:
  """Every scalar written to the TensorBoard event files under `directory`, by tag."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
  accumulator.Reload()
  out = {}
  for tag in accumulator.Tags()["tensors"]:
    out[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
  for tag in accumulator.Tags()["scalars"]:
    out[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
  return out


def _leaves_close(a, b, atol=0.0):
  return all(np.allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# -- the loss and the step ----------------------------------------------------------------------


def test_loss_counts_only_weighted_tokens():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11))
  targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
  weights = jnp.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], jnp.float32)
  sums = trainer.loss_sums(logits, targets, weights)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  assert jnp.allclose(sums["loss"], (nll * weights).sum()) and float(sums["weight"]) == 6.0
  assert float(sums["correct"]) == float(((jnp.argmax(logits, -1) == targets) * weights).sum())
  smoothed = trainer.loss_sums(logits, targets, weights, label_smoothing=0.1)["loss"]
  uniform_nll = -jax.nn.log_softmax(logits).mean(-1)
  assert jnp.allclose(smoothed, ((0.9 * nll + 0.1 * uniform_nll) * weights).sum(), atol=1e-5)
  # Changing a zero-weight token's logits changes nothing.
  other = logits.at[0, 0].set(100.0)
  assert jnp.allclose(trainer.loss_sums(other, targets, weights)["loss"], sums["loss"])
  z = trainer.loss_sums(logits, targets, weights, z_loss=1e-2)
  assert jnp.allclose(z["loss"] - sums["loss"], z["z_loss"]) and float(z["z_loss"]) > 0


def _random_batch(rng, batch, length, vocab):
  tokens = rng.integers(3, vocab, (batch, length)).astype(np.int32)
  weights = (rng.random((batch, length)) > 0.3).astype(np.float32)
  weights[0, : length // 2] = 0  # Rows with different numbers of weighted tokens.
  return {"decoder_target_tokens": tokens, "decoder_input_tokens": np.roll(tokens, 1, axis=1),
          "decoder_loss_weights": weights}


def test_gradient_accumulation_equals_one_full_batch():
  config = TransformerConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=2, num_kv_heads=1, mlp_dim=64)
  params = jax.tree_util.tree_map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                                  Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)),
                                  is_leaf=lambda x: hasattr(x, "unbox"))["params"]
  optimizer = optax.sgd(0.1)
  state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
  batch = _random_batch(np.random.default_rng(0), 4, 8, 64)
  full = jax.jit(trainer.make_train_step(config, optimizer, accumulation_steps=1))
  accumulated = jax.jit(trainer.make_train_step(config, optimizer, accumulation_steps=2))
  state_full, metrics_full = full(state, batch)
  state_acc, metrics_acc = accumulated(state, batch)
  assert _leaves_close(state_full["params"], state_acc["params"], atol=1e-6)
  assert abs(float(metrics_full["loss"]) - float(metrics_acc["loss"])) < 1e-6
  assert float(metrics_acc["weighted_tokens"]) == float(batch["decoder_loss_weights"].sum())
  # Normalising each micro-batch by its own tokens would differ: the rows are unbalanced.
  half = [jax.tree_util.tree_map(lambda x, i=i: x[2 * i:2 * i + 2], batch) for i in range(2)]
  per_micro = np.mean([float(full(state, h)[1]["loss"]) for h in half])
  assert abs(per_micro - float(metrics_full["loss"])) > 1e-4


def test_the_model_learns_to_copy_across_a_gap():
  """Copying tokens seen earlier (induction) is what a search agent's queries and answers need; the
  tiny model and this step must learn it from scratch within a few hundred steps."""
  config = TransformerConfig(vocab_size=256, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=128)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, 300))
  step = jax.jit(trainer.make_train_step(config, optimizer))
  state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
  rng = np.random.default_rng(0)
  span, gap = 24, 40

  def batch():
    text, filler = rng.integers(3, 256, (16, span)), rng.integers(3, 256, (16, gap))
    tokens = np.concatenate([text, filler, np.full((16, 1), 2), text], 1).astype(np.int32)
    weights = np.zeros(tokens.shape, np.float32)
    weights[:, span + gap + 1:] = 1.0  # Only the copy is scored; it cannot be guessed (1 in 253).
    return {"decoder_target_tokens": tokens, "decoder_input_tokens": np.roll(tokens, 1, axis=1) * (
        np.arange(tokens.shape[1]) > 0), "decoder_loss_weights": weights}

  accuracy = []
  for _ in range(300):
    state, metrics = step(state, batch())
    accuracy.append(float(metrics["accuracy"]))
  assert accuracy[0] < 0.05 and np.mean(accuracy[-10:]) > 0.95, accuracy[::25]


def test_even_curriculum_splits_the_steps():
  assert trainer.even_curriculum(["a", "b", "c"], 10) == [("a", 4), ("b", 3), ("c", 3)]
  with pytest.raises(ValueError, match="cannot make 3 curriculum stages"):
    trainer.even_curriculum(["a", "b", "c"], 2)


# -- whole runs ------------------------------------------------------------------------------------------


def test_train_writes_config_checkpoints_and_metrics(tiny_run_gin, tmp_path, capsys):
  model_dir = tmp_path / "run"
  assert cli.main(_train_args(tiny_run_gin, model_dir, 12, "--gin.CHECKPOINT_PERIOD=5",
                              "--gin_bindings=trainer.train.log_period = 2")) == 0
  assert "trained to step 12" in capsys.readouterr().out
  config = (model_dir / "config.gin").read_text()
  assert "TRAIN_STEPS = 12" in config and "MIXTURE_OR_TASK_NAME = 'ramp_mixed_1to4'" in config
  run = checkpoints.TrainingCheckpoints(model_dir / "checkpoints")
  assert run.steps() == [5, 10, 12]  # Every 5 steps, and the end (keep 3).
  run.close()
  events = _events(model_dir / "tensorboard")
  for tag in ("loss", "accuracy", "learning_rate", "grad_norm", "tokens_per_second", "mfu", "z_loss"):
    assert tag in events, sorted(events)
  losses = [v for _, v in events["loss"]]
  assert losses[-1] < losses[0]  # It learns.
  assert all(0 < v < 1 for _, v in events["mfu"])
  rates = dict(events["learning_rate"])
  assert rates[2] < rates[6] and rates[12] < rates[6]  # Warm-up, then decay.


def test_length_buckets_train_on_shorter_rows(tiny_run_gin, tmp_path):
  weighted_share = {}
  for buckets in ("()", "[(96, 12), (144, 8)]"):  # Full rows: 4 x 288 tokens; buckets about as many.
    model_dir = tmp_path / f"run{len(weighted_share)}"
    assert cli.main(_train_args(tiny_run_gin, model_dir, 6, "--gin.PACK=False", "--gin.CHECKPOINT_PERIOD=100",
                                f"--gin_bindings=train/input_pipeline.DatasetConfig.length_buckets = {buckets}",
                                "--gin_bindings=trainer.train.log_period = 1")) == 0
    events = _events(model_dir / "tensorboard")
    assert len(events["loss"]) == 6 and all(np.isfinite([v for _, v in events["loss"]]))
    # tokens_per_second counts the rows' tokens of each step as batched, weighted ones the answer's.
    weighted_share[buckets] = np.mean([w / r for (_, w), (_, r) in zip(events["weighted_tokens_per_second"],
                                                                       events["tokens_per_second"])])
  # Shorter rows hold less padding, so a larger share of their tokens carry loss.
  # (Both shares are token counts over the same seconds: no timing noise. Measured 0.36 against 0.30.)
  assert weighted_share["[(96, 12), (144, 8)]"] > 1.1 * weighted_share["()"], weighted_share


def test_length_bucket_rows_must_divide_like_the_batch(tiny_run_gin, tmp_path, capsys):
  assert cli.main(_train_args(tiny_run_gin, tmp_path / "run", 4, "--gin.PACK=False",
                              "--gin_bindings=train/input_pipeline.DatasetConfig.length_buckets = [(144, 6)]",
                              "--gin_bindings=trainer.train.gradient_accumulation_steps = 4")) != 0
  assert ("DatasetConfig.length_buckets: bucket 144's rows 6 does not divide into 4 micro-batches"
          in capsys.readouterr().err)


def test_curriculum_runs_its_stages_in_order(tiny_run_gin, tmp_path):
  model_dir = tmp_path / "run"
  assert cli.main(_train_args(tiny_run_gin, model_dir, 5, "--gin.CHECKPOINT_PERIOD=100",
                              "--gin_bindings=trainer.train.curriculum = [('ramp_mask1', 2), ('ramp_mask3', 3)]",
                              "--gin_bindings=trainer.train.log_period = 1")) == 0
  run = checkpoints.TrainingCheckpoints(model_dir / "checkpoints")
  assert run.steps() == [2, 5]  # The end of each stage is saved.
  run.close()
  stages = dict(_events(model_dir / "tensorboard")["stage"])
  assert stages[1] == stages[2] == 0 and stages[3] == stages[5] == 1


def test_resume_position_lets_the_current_stage_change_length():
  written = [["a", 3], ["b", 3]]
  assert trainer.resume_position(written, [("a", 3), ("b", 3)], 4, "ckpts") == (1, 1)
  assert trainer.resume_position(written, [("a", 3), ("b", 3)], 3, "ckpts") == (1, 0)
  assert trainer.resume_position(written, [("a", 3), ("b", 5)], 6, "ckpts") == (1, 3)  # Last stage lengthened.
  assert trainer.resume_position(written, [("a", 3), ("b", 2)], 5, "ckpts") == (2, 0)  # Shortened to where it is.
  assert trainer.resume_position([["a", 6]], [("a", 9)], 6, "ckpts") == (0, 6)  # TRAIN_STEPS raised.
  for stages, step in [([("a", 4), ("b", 3)], 4),  # A finished stage changed.
                       ([("a", 3), ("c", 3)], 4),  # Another mixture.
                       ([("a", 3), ("b", 3), ("c", 2)], 4),  # Another number of stages.
                       ([("a", 3), ("b", 1)], 5)]:  # The checkpoint is past the new end of its stage.
    with pytest.raises(ConfigError, match=r"checkpoint \d+ in ckpts was written by a run with curriculum"):
      trainer.resume_position(written, stages, step, "ckpts")


def test_a_finished_curriculum_run_given_more_steps_trains_on(tiny_run_gin, tmp_path, capsys):
  """As in T5X, raising TRAIN_STEPS (here: lengthening the last stage) continues a finished run,
  the same as if it had been given those steps from the start (constant learning rate)."""
  def args(model_dir, last_stage, *extra):
    return _train_args(tiny_run_gin, model_dir, 2 + last_stage, "--gin.CHECKPOINT_PERIOD=100",
                       "--gin.LEARNING_RATE=1e-3",
                       f"--gin_bindings=trainer.train.curriculum = [('ramp_mask1', 2), ('ramp_mask3', {last_stage})]",
                       *extra)

  extended, whole = tmp_path / "extended", tmp_path / "whole"
  assert cli.main(args(extended, 2)) == 0
  gin.clear_config()
  assert cli.main(args(extended, 4)) == 0
  assert "trained to step 6" in capsys.readouterr().out
  gin.clear_config()
  assert cli.main(args(whole, 4)) == 0
  assert _leaves_close(checkpoints.load_params(whole / "checkpoints"),
                       checkpoints.load_params(extended / "checkpoints"))
  # A stage the run has finished cannot change: one line naming the checkpoint, and nothing trained.
  gin.clear_config()
  capsys.readouterr()
  assert cli.main(_train_args(tiny_run_gin, extended, 8, "--gin.CHECKPOINT_PERIOD=100",
                              "--gin_bindings=trainer.train.curriculum = [('ramp_mask1', 4), ('ramp_mask3', 4)]")) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and f"checkpoint 6 in {extended / 'checkpoints'} was written by" in err, err
  run = checkpoints.TrainingCheckpoints(extended / "checkpoints")
  assert run.steps() == [2, 4, 6]
  run.close()


def test_curriculum_must_sum_to_the_total(tiny_run_gin, tmp_path, capsys):
  assert cli.main(_train_args(tiny_run_gin, tmp_path / "run", 6,
                              "--gin_bindings=trainer.train.curriculum = [('ramp_mask1', 2), ('ramp_mask2', 2)]")) != 0
  assert "sum to 4 steps, but total_steps is 6" in capsys.readouterr().err


def test_gin_mistakes_are_one_clear_line(tiny_run_gin, tmp_path, capsys):
  # A typo in a parameter name.
  assert cli.main(_train_args(tiny_run_gin, tmp_path / "a", 2, "--gin_bindings=trainer.train.modle_dir = 'x'")) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "modle_dir" in err, err
  # A required macro that is not set.
  args = [a for a in _train_args(tiny_run_gin, tmp_path / "b", 2) if not a.startswith("--gin.TRAIN_STEPS")]
  gin.clear_config()
  assert cli.main(args) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "TRAIN_STEPS" in err and "REQUIRED" in err, err
  # A mixture that does not exist.
  gin.clear_config()
  args = _train_args(tiny_run_gin, tmp_path / "c", 2, "--gin.MIXTURE_OR_TASK_NAME='ramp_mask7'")
  assert cli.main(args) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "no SeqIO task or mixture named 'ramp_mask7'" in err, err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_run_gin, tmp_path, capsys):
  model_dir = tmp_path / "run"
  code = cli.main(_train_args(tiny_run_gin, model_dir, 40, "--gin.CHECKPOINT_PERIOD=1", "--gin.WARMUP_STEPS=0",
                              "--gin.PEAK_LEARNING_RATE=1e30", "--gin_bindings=trainer.train.max_grad_norm = None",
                              "--gin_bindings=trainer.train.log_period = 1"))
  err = capsys.readouterr().err
  assert code == 2 and "loss is" in err and "at step" in err, err
  bad_step = int(err.split("at step ")[1].split(";")[0])
  run = checkpoints.TrainingCheckpoints(model_dir / "checkpoints")
  assert run.latest_step() == bad_step - 1
  params = checkpoints.load_params(model_dir / "checkpoints")
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params))
  run.close()


def test_initial_checkpoint_path_starts_from_those_parameters(tiny_run_gin, tmp_path):
  first = tmp_path / "first"
  assert cli.main(_train_args(tiny_run_gin, first, 3, "--gin.CHECKPOINT_PERIOD=100")) == 0
  gin.clear_config()
  second = tmp_path / "second"
  assert cli.main(_train_args(tiny_run_gin, second, 1, f"--gin.INITIAL_CHECKPOINT_PATH='{first / 'checkpoints'}'",
                              "--gin.PEAK_LEARNING_RATE=0.0", "--gin.CHECKPOINT_PERIOD=100")) == 0
  # With a learning rate of 0 one step changes nothing: the run began from the first run's parameters.
  assert _leaves_close(checkpoints.load_params(first / "checkpoints"), checkpoints.load_params(second / "checkpoints"))


def test_restoring_a_given_step_continues_as_the_run_did(tiny_run_gin, tmp_path, capsys):
  first = tmp_path / "first"
  assert cli.main(_train_args(tiny_run_gin, first, 6, "--gin.CHECKPOINT_PERIOD=2")) == 0
  gin.clear_config()
  # A new run dir that restores step 2 of the first run (not its latest, 6) and trains on to 6.
  second = tmp_path / "second"
  assert cli.main(_train_args(tiny_run_gin, second, 6, "--gin.CHECKPOINT_PERIOD=2",
                              f"--gin_bindings=checkpoints.RestoreCheckpointConfig.path = '{first / 'checkpoints'}'",
                              "--gin_bindings=checkpoints.RestoreCheckpointConfig.mode = 'specific'",
                              "--gin_bindings=checkpoints.RestoreCheckpointConfig.step = 2")) == 0
  # Steps 3 to 6 again, on the same data (the input position is in the checkpoint): the same parameters.
  assert _leaves_close(checkpoints.load_params(first / "checkpoints"), checkpoints.load_params(second / "checkpoints"))
  capsys.readouterr()  # The two runs' progress bars.
  for name, bindings, message in [
      ("third", [f"checkpoints.RestoreCheckpointConfig.path = '{first / 'checkpoints'}'",
                 "checkpoints.RestoreCheckpointConfig.mode = 'specific'",
                 "checkpoints.RestoreCheckpointConfig.step = 3"],
       f"no checkpoint of step 3 in {first / 'checkpoints'} (have [2, 4, 6])"),
      ("fourth", [f"checkpoints.RestoreCheckpointConfig.path = '{tmp_path / 'missing'}'"],
       f"RestoreCheckpointConfig.path {tmp_path / 'missing'} is not a checkpoints directory")]:
    gin.clear_config()
    assert cli.main(_train_args(tiny_run_gin, tmp_path / name, 6, *[f"--gin_bindings={b}" for b in bindings])) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / name / "checkpoints" / "2").exists()  # Nothing trained from scratch instead.


def test_killed_run_resumes_to_the_same_parameters(tiny_run_gin, tmp_path):
  """SIGKILL at an arbitrary step, restart: the end equals an uninterrupted run of the same length."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  steps = 10

  def command(model_dir):
    return [sys.executable, "-m", "masksearch_jax", *_train_args(tiny_run_gin, model_dir, steps,
                                                                  "--gin.CHECKPOINT_PERIOD=2")]

  uninterrupted = tmp_path / "whole"
  subprocess.run(command(uninterrupted), env=env, check=True, capture_output=True, timeout=600)
  killed = tmp_path / "killed"
  process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoints" / "4").exists():
      time.sleep(0.05)
    assert (killed / "checkpoints" / "4").exists(), "the run never reached step 4"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  survived = checkpoints.TrainingCheckpoints(killed / "checkpoints").latest_step()
  assert survived is not None and survived < steps
  result = subprocess.run(command(killed), env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"trained to step {steps}" in result.stdout
  assert _leaves_close(checkpoints.load_params(uninterrupted / "checkpoints"),
                       checkpoints.load_params(killed / "checkpoints"))
