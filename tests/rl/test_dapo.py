"""The DAPO loop: update features, micro-batching, dynamic sampling, and a toy environment where it learns."""

from __future__ import annotations

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from masksearch_jax.agent import protocol
from masksearch_jax.agent.rollout import RolloutConfig
from masksearch_jax.data.passage import Passage
from masksearch_jax.data.trajectories import ContextEncoder, Segment, Trajectory
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.retrieval.tantivy_index import build_index
from masksearch_jax.rl.dapo import TaskStream, make_dapo_update, rl_features, train_dapo
from masksearch_jax.rl.dapo_loss import ClipSettings
from masksearch_jax.rl.rewards import RewardFunction
from masksearch_jax.training.checkpoints import save_params
from masksearch_jax.training.trainer import make_train_step

CONFIG = TransformerConfig(vocab_size=320, num_layers=2, d_model=48, num_heads=4, num_kv_heads=2, mlp_dim=96)


def trajectory(prompt_ids, pieces, logprobs=None):
  """A trajectory from (token ids, written by the model?) pieces."""
  ids, mask = [], []
  for piece, written in pieces:
    ids += piece
    mask += [int(written)] * len(piece)
  logprobs = logprobs or [(-0.5 if m else None) for m in mask]
  return Trajectory(id="t", kind="qa", prompt="p", segments=(Segment("model", "x"),), stop_reason="answer",
                    answer="a", prompt_token_ids=tuple(prompt_ids), token_ids=tuple(ids), model_token_mask=tuple(mask),
                    logprobs=tuple(logprobs))


def test_rl_features_align_weights_and_old_logprobs_with_targets():
  t = trajectory([5, 6], [([7, 8], True), ([9], False), ([10], True)], logprobs=[-1.0, -2.0, None, -3.0])
  f = rl_features([t], np.array([0.5]), length=8)
  assert f["inputs"][0].tolist() == [0, 5, 6, 7, 8, 9, 0, 0]
  assert f["targets"][0].tolist() == [5, 6, 7, 8, 9, 10, 0, 0]
  assert f["weights"][0].tolist() == [0, 0, 1, 1, 0, 1, 0, 0]
  assert f["old_logprobs"][0].tolist() == [0, 0, -1, -2, 0, -3, 0, 0]
  assert f["segment_ids"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
  assert f["advantages"].tolist() == [0.5]
  with pytest.raises(ValueError, match="has 7 tokens"):
    rl_features([t], np.array([0.5]), length=5)


def test_micro_batches_of_different_lengths_give_the_mini_batch_token_mean():
  params = nn.unbox(Decoder(CONFIG).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  rows = [trajectory(rng.integers(1, 300, 3).tolist(), [(rng.integers(1, 300, n).tolist(), True)])
          for n in (2, 9, 4, 1)]  # Very different numbers of valid tokens per row.
  features = rl_features(rows, np.array([1.0, -0.5, 0.3, -1.2]), length=16)
  features["old_logprobs"] += rng.normal(0, 0.3, features["old_logprobs"].shape).astype(np.float32)
  optimizer = optax.sgd(1.0)
  state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
  results = {}
  for acc in (1, 2, 4):
    update = jax.jit(make_dapo_update(CONFIG, optimizer, ClipSettings(), accumulation_steps=acc))
    results[acc] = update(state, {k: jnp.asarray(v) for k, v in features.items()})
  for acc in (2, 4):
    for a, b in zip(jax.tree_util.tree_leaves(results[1][0]["params"]), jax.tree_util.tree_leaves(results[acc][0]["params"])):
      np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(results[1][1]["loss"], results[acc][1]["loss"], rtol=1e-5)
  assert float(results[1][1]["valid_tokens"]) == 16.0


def test_task_streams_repeat_their_source_and_resume_at_a_position():
  items = lambda: iter([{"id": str(i), "question": f"q{i}", "answer": "a"} for i in range(5)])  # noqa: E731
  stream = TaskStream(items, "qa")
  assert [t.id for t in stream.take(3)] == ["qa-0", "qa-1", "qa-2"]
  assert [t.id for t in stream.take(4)] == ["qa-3", "qa-4", "qa-0", "qa-1"]  # The next pass starts over.
  assert stream.position == 7
  assert [t.id for t in TaskStream(items, "qa", position=7).take(2)] == ["qa-2", "qa-3"]


# -- a toy environment where the right behaviour is known ------------------------------------------------

WORDS = ["kelo", "rani", "muzu", "paris"]
TOY_PASSAGES = [Passage(f"p{i}", f"Place {w}", f"The secret word of {w} is kelo.") for i, w in
                enumerate(["tabudo", "seine", "museum", "river", "mountain", "city"])]


def toy_items(_stage=None):
  return [{"id": f"toy{i}", "question": f"What is the secret word of {p.title.split()[1]}?", "answer": "kelo"}
          for i, p in enumerate(TOY_PASSAGES)]


def sft_demonstrations(vocab):
  """Demonstrations of the protocol: search once, read, answer with a random one of four words."""
  encoder = ContextEncoder(vocab)
  rng = np.random.default_rng(0)
  rows = []
  for item in toy_items() * 8:
    place = item["question"].split()[-1].rstrip("?")
    prompt = [0, *encoder.encode(protocol.qa_prompt(item["question"]), start_of_sequence=True)]
    turn1 = encoder.encode(f"<think> find it </think>\n<search> secret word of {place} </search>")
    obs = encoder.encode(f"\n\n<information>Doc 1(Title: Place {place}) The secret word of {place} is kelo.\n"
                         f"</information>\n\n")
    turn2 = encoder.encode(f"<think> read it </think>\n<answer> {rng.choice(WORDS)} </answer>")
    tokens = prompt + turn1 + obs + turn2
    weights = [0] * len(prompt) + [1] * len(turn1) + [0] * len(obs) + [1] * len(turn2)
    rows.append((tokens, weights))
  return rows


@pytest.fixture(scope="module")
def toy_sft_checkpoint(vocab, tmp_path_factory):
  """A tiny policy briefly trained on the demonstrations (the protocol, but a random answer)."""
  rows = sft_demonstrations(vocab)
  length = max(len(t) for t, _ in rows)
  inputs = np.zeros((len(rows), length), np.int32)
  targets = np.zeros_like(inputs)
  weights = np.zeros((len(rows), length), np.float32)
  for i, (tokens, w) in enumerate(rows):
    inputs[i, :len(tokens) - 1] = tokens[:-1]
    targets[i, :len(tokens) - 1] = tokens[1:]
    weights[i, :len(tokens) - 1] = w[1:]
  params = nn.unbox(Decoder(CONFIG).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  optimizer = optax.adam(3e-3)
  step = jax.jit(make_train_step(CONFIG, optimizer))
  state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
  rng = np.random.default_rng(1)
  for _ in range(250):
    pick = rng.choice(len(rows), 16)
    state, metrics = step(state, {"decoder_input_tokens": inputs[pick], "decoder_target_tokens": targets[pick],
                                  "decoder_loss_weights": weights[pick]})
  assert float(metrics["loss"]) < 0.5
  return save_params(state["params"], tmp_path_factory.mktemp("toy") / "sft", CONFIG)


def test_dapo_raises_the_reward_on_the_toy_environment(vocab, toy_sft_checkpoint, tmp_path):
  index = tmp_path / "index"
  build_index(TOY_PASSAGES, index, progress=False)
  rollout = RolloutConfig(batch_size=16, max_turns=3, max_turn_tokens=32, max_observation_tokens=64, max_length=448,
                          top_k=1, temperature=1.0, prefill_buckets=(32, 128))
  # Room for the odd step where nearly every group's rewards are equal (46 of 48 have been seen):
  # the filter then needs more than 8 generation batches to fill a step.
  summary = train_dapo(model=CONFIG, model_dir=str(tmp_path / "dapo"), total_steps=16, kind="qa",
                       group_size=4, train_batch_size=4, gen_batch_size=6, mini_batch_size=4, micro_batch_size=8,
                       max_num_gen_batches=24, rollout=rollout, reward_fn=RewardFunction(answer_reward="recall",
                                                                                     format_weight=0.0),
                       optimizer=optax.adam, learning_rate=2e-3, initial_checkpoint_path=str(toy_sft_checkpoint),
                       index=str(index), task_items=toy_items, vocabulary=vocab, checkpoint_period=8,
                       progress=False)
  history = summary.reward_history
  assert summary.final_step == 16 and len(history) == 16
  first, last = np.mean(history[:4]), np.mean(history[-4:])
  assert first < 0.6, history  # About a quarter of random answers say "kelo".
  assert last > first + 0.25, history
  assert summary.generation_batches >= 16


TOY_ROLLOUT = dict(batch_size=16, max_turns=3, max_turn_tokens=32, max_observation_tokens=64, max_length=448,
                   top_k=1, temperature=1.0, prefill_buckets=(32, 128))


def toy_run(vocab, checkpoint, index, model_dir, **overrides):
  options = dict(model=CONFIG, model_dir=str(model_dir), total_steps=4, kind="qa", group_size=4, train_batch_size=4,
                 gen_batch_size=6, mini_batch_size=4, micro_batch_size=8, max_num_gen_batches=8,
                 rollout=RolloutConfig(**TOY_ROLLOUT), reward_fn=RewardFunction(answer_reward="recall"),
                 optimizer=optax.adam, learning_rate=2e-3, initial_checkpoint_path=str(checkpoint), index=str(index),
                 task_items=toy_items, vocabulary=vocab, checkpoint_period=2, progress=False)
  options.update(overrides)
  return train_dapo(**options)


def test_an_interrupted_run_resumes_exactly(vocab, toy_sft_checkpoint, tmp_path, monkeypatch):
  from masksearch_jax.models.span_scorer import load_checkpoint
  from masksearch_jax.rl import dapo
  index = tmp_path / "index"
  build_index(TOY_PASSAGES, index, progress=False)
  whole = toy_run(vocab, toy_sft_checkpoint, index, tmp_path / "whole")

  real = dapo.rl_features
  calls = []

  def failing_features(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # The third training batch, after the checkpoint of step 2.
      raise KeyboardInterrupt("simulated interruption")
    return real(*args, **kwargs)

  monkeypatch.setattr(dapo, "rl_features", failing_features)
  with pytest.raises(KeyboardInterrupt):
    toy_run(vocab, toy_sft_checkpoint, index, tmp_path / "cut")
  monkeypatch.setattr(dapo, "rl_features", real)
  resumed = toy_run(vocab, toy_sft_checkpoint, index, tmp_path / "cut")
  assert resumed.resumed_from == 2 and resumed.final_step == 4
  assert resumed.reward_history == whole.reward_history[2:]
  assert resumed.generation_batches == whole.generation_batches
  a, _ = load_checkpoint(tmp_path / "whole")
  b, _ = load_checkpoint(tmp_path / "cut")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert set(whole.seconds_by_part) == {"generation", "retrieval", "reward", "update"}
  assert all(v > 0 for v in whole.seconds_by_part.values())
  # Given one more step, the finished run trains on from its last checkpoint (as the SFT trainer does).
  extended = toy_run(vocab, toy_sft_checkpoint, index, tmp_path / "cut", total_steps=5)
  assert extended.resumed_from == 4 and extended.final_step == 5 and len(extended.reward_history) == 1


_SHARDED_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
import test_dapo as T
from masksearch_jax.data import vocabularies
from masksearch_jax.models.span_scorer import load_checkpoint
from masksearch_jax.training.partitioning import Partitioner
assert jax.device_count() == 8
vocab = vocabularies.sentencepiece_vocabulary(sys.argv[2])
out = {}
for name, partitioner in [("one", Partitioner(devices=jax.devices()[:1])),
                          ("mesh", Partitioner(mesh_axes={"data": 2, "fsdp": 2, "tensor": 2}))]:
  summary = T.toy_run(vocab, sys.argv[3], sys.argv[4], f"{sys.argv[5]}/{name}", total_steps=2, checkpoint_period=2,
                      partitioner=partitioner)
  params, _ = load_checkpoint(f"{sys.argv[5]}/{name}")
  out[name] = {"rewards": summary.reward_history,
               "params": [np.asarray(x).ravel()[:50].tolist() for x in jax.tree_util.tree_leaves(params)]}
print(json.dumps(out))
"""


def test_dapo_runs_sharded_on_the_sft_partitioner(vocab, toy_sft_checkpoint, tmp_path):
  import json
  import os
  import subprocess
  import sys
  index = tmp_path / "index"
  build_index(TOY_PASSAGES, index, progress=False)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  here = os.path.dirname(__file__)
  proc = subprocess.run([sys.executable, "-c", _SHARDED_CHILD, here, vocab.sentencepiece_model_file,
                         str(toy_sft_checkpoint), str(index), str(tmp_path)], env=env, capture_output=True, text=True,
                        timeout=900, cwd=os.path.dirname(here))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["mesh"]["rewards"] == out["one"]["rewards"]
  for a, b in zip(out["one"]["params"], out["mesh"]["params"]):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_dapo_command_with_the_run_files(tiny_run_gin, tmp_path, capsys):
  from masksearch_jax import cli
  args = ["dapo", "--gin_file=models/tiny.gin", "--gin_file=runs/dapo_ramp.gin", f"--gin_file={tiny_run_gin}",
          f"--gin.MODEL_DIR='{tmp_path / 'dapo'}'", "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.TRAIN_STEPS=2",
          "--gin.CURRICULUM=[(1, 1), (2, 1)]", "--gin.GROUP_SIZE=2", "--gin.TRAIN_BATCH_SIZE=2",
          "--gin.GEN_BATCH_SIZE=2", "--gin.MINI_BATCH_SIZE=2", "--gin.MICRO_BATCH_SIZE=2",
          "--gin.MAX_NUM_GEN_BATCHES=1",
          "--gin_bindings=rollout.RolloutConfig.batch_size = 4", "--gin_bindings=rollout.RolloutConfig.max_turns = 2",
          "--gin_bindings=rollout.RolloutConfig.max_turn_tokens = 8",
          "--gin_bindings=rollout.RolloutConfig.max_length = 512",
          "--gin_bindings=rollout.RolloutConfig.prefill_buckets = (64, 256)"]
  # A random policy never answers: every group's rewards are equal, and dynamic sampling says so.
  assert cli.main(args) == 2
  error = capsys.readouterr().err
  assert "max_num_gen_batches=1" in error and "kept 0 of the 2 groups" in error
  # Without the filter (plain GRPO batches) the same run trains through both curriculum stages.
  try:
    assert cli.main(args + ["--gin_bindings=masksearch_jax.rl.dynamic_sampling.DynamicSampler.filter_groups = False"]) == 0
  finally:
    gin.clear_config()  # The binding must not reach later tests' samplers.
  assert "DAPO to step 2" in capsys.readouterr().out
  assert (tmp_path / "dapo" / "checkpoints").is_dir() and (tmp_path / "dapo" / "config.gin").is_file()
