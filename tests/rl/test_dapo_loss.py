"""Tests of DAPO's policy loss (masksearch_jax/rl/dapo_loss.py) and group advantages
(masksearch_jax/rl/advantages.py) against hand-computed numbers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from masksearch_jax.rl import dapo_loss
from masksearch_jax.rl.advantages import group_advantages

LN = math.log

# Two responses of four tokens. Response 0 has A = +1, response 1 has A = -1.
#   token:            0            1           2                     3
#   response 0: r=1.5 clip-high  r=0.5 free  environment (NaN old)  r=1.0 free
#   response 1: r=0.5 clip-low   r=1.5 free  r=5.0 dual clip        padding
# Token losses (-A r, clipped): -1.28, -0.5, -, -1.0 and 0.8, 1.5, min(5, 3) = 3, -.
LOGP = np.array([[LN(1.5), LN(0.5), -0.7, 0.0], [LN(0.5), LN(1.5), LN(5.0), -3.0]], np.float32)
OLD_LOGP = np.array([[0.0, 0.0, np.nan, 0.0], [0.0, 0.0, 0.0, np.nan]], np.float32)
ADVANTAGES = np.array([1.0, -1.0], np.float32)
WEIGHTS = np.array([[1, 1, 0, 1], [1, 1, 1, 0]], np.float32)
HAND_SUM = -1.28 - 0.5 - 1.0 + 0.8 + 1.5 + 3.0


def _loss(logp=LOGP, **kwargs):
  return dapo_loss.policy_loss(jnp.asarray(logp), OLD_LOGP, ADVANTAGES, WEIGHTS, **kwargs)


def test_clip_settings_are_checked():
  assert dapo_loss.ClipSettings() == dapo_loss.ClipSettings(0.2, 0.28, 3.0)
  for kwargs, match in (({"eps_low": 1.0}, "eps_low"), ({"eps_high": -0.1}, "eps_high"),
                        ({"clip_ratio_c": 1.0}, "clip_ratio_c")):
    with pytest.raises(ValueError, match=match):
      dapo_loss.ClipSettings(**kwargs)


def test_loss_by_hand_with_clip_low_clip_high_dual_clip_and_a_masked_environment_token():
  loss, metrics = _loss()
  assert float(loss) == pytest.approx(HAND_SUM / 6, abs=1e-5)
  assert float(metrics["pg_loss"]) == pytest.approx(HAND_SUM / 6, abs=1e-5)
  assert float(metrics["valid_tokens"]) == 6
  assert float(metrics["clip_frac_low"]) == pytest.approx(1 / 6)
  assert float(metrics["clip_frac_high"]) == pytest.approx(1 / 6)
  assert float(metrics["dual_clip_frac"]) == pytest.approx(1 / 6)
  assert float(metrics["ratio_mean"]) == pytest.approx((1.5 + 0.5 + 1.0 + 0.5 + 1.5 + 5.0) / 6, abs=1e-5)
  kl = sum((r - 1) - LN(r) for r in (1.5, 0.5, 1.0, 0.5, 1.5, 5.0)) / 6
  assert float(metrics["approx_kl"]) == pytest.approx(kl, abs=1e-5)
  assert "entropy" not in metrics


def test_without_the_dual_clip_the_exploded_token_counts_in_full():
  loss, metrics = _loss(clip=dapo_loss.ClipSettings(clip_ratio_c=None))
  assert float(loss) == pytest.approx((HAND_SUM - 3.0 + 5.0) / 6, abs=1e-5)
  assert float(metrics["dual_clip_frac"]) == 0.0


def test_gradients_flow_only_through_unclipped_generated_tokens():
  grads = jax.grad(lambda logp: _loss(logp)[0])(jnp.asarray(LOGP))
  # d(-A r)/dlogp = -A r on free tokens; 0 where a clip holds, on the environment token and padding.
  expected = np.array([[0.0, -0.5, 0.0, -1.0], [0.0, 1.5, 0.0, 0.0]]) / 6
  np.testing.assert_allclose(np.asarray(grads), expected, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(grads)))


def test_the_ratio_is_clamped_in_log_space():
  logp = LOGP.copy()
  logp[0, 1] = 50.0  # log-ratio 50 -> clamped to 20; A > 0, so the upper clip holds the loss.
  logp[1, 1] = -50.0  # log-ratio -50 -> -20; A < 0, the lower clip holds it.
  loss, metrics = _loss(logp)
  assert np.isfinite(float(loss))
  assert float(loss) == pytest.approx((HAND_SUM + 0.5 - 1.28 - 1.5 + 0.8) / 6, abs=1e-5)
  assert float(metrics["approx_kl"]) < float("inf")


def test_token_mean_over_two_micro_batches_of_different_lengths_equals_the_one_batch_mean():
  policy_loss = jax.jit(dapo_loss.policy_loss)  # One compilation per shape instead of op by op.
  rng = np.random.default_rng(0)
  # Micro-batch a: 2 responses, length 5; micro-batch b: 3 responses, length 3.
  # 9 valid tokens in a, 6 in b: the mean of the two means is not the token mean.
  masks = {"a": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.float32),
           "b": np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], np.float32)}
  data = {}
  for name, weights in masks.items():
    shape = weights.shape
    data[name] = (rng.normal(size=shape).astype(np.float32) * 0.3, rng.normal(size=shape).astype(np.float32) * 0.3,
                  rng.normal(size=shape[:1]).astype(np.float32), weights)
  total = dapo_loss.valid_token_count(data["a"][3], data["b"][3])
  assert float(total) == data["a"][3].sum() + data["b"][3].sum()

  def micro(logp, name):
    _, old, adv, w = data[name]
    return policy_loss(logp, old, adv, w, num_valid_tokens=total)

  # The same tokens as one batch, b padded to length 5 with weight 0.
  def pad(x, value=0.0):
    return np.pad(x, ((0, 0), (0, 5 - x.shape[1])), constant_values=value)

  one = [np.concatenate([data["a"][i], pad(data["b"][i])]) for i in (0, 1, 3)]
  advantages = np.concatenate([data["a"][2], data["b"][2]])
  whole, whole_metrics = policy_loss(jnp.asarray(one[0]), one[1], advantages, one[2])
  (loss_a, metrics_a), (loss_b, metrics_b) = micro(data["a"][0], "a"), micro(data["b"][0], "b")
  assert float(loss_a + loss_b) == pytest.approx(float(whole), abs=1e-6)
  for key in ("clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean"):
    assert float(metrics_a[key] + metrics_b[key]) == pytest.approx(float(whole_metrics[key]), abs=1e-6)
  # Not the mean of the micro-batches' own means.
  own_a = policy_loss(data["a"][0], data["a"][1], data["a"][2], data["a"][3])[0]
  own_b = policy_loss(data["b"][0], data["b"][1], data["b"][2], data["b"][3])[0]
  assert abs(float(own_a + own_b) / 2 - float(whole)) > 1e-3
  # Gradients accumulate the same way.
  grad_whole = jax.grad(lambda lp: policy_loss(lp, one[1], advantages, one[2])[0])(jnp.asarray(one[0]))
  grad_a = jax.grad(lambda lp: micro(lp, "a")[0])(jnp.asarray(data["a"][0]))
  grad_b = jax.grad(lambda lp: micro(lp, "b")[0])(jnp.asarray(data["b"][0]))
  np.testing.assert_allclose(np.asarray(grad_whole[:2]), np.asarray(grad_a), atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad_whole[2:, :3]), np.asarray(grad_b), atol=1e-6)
  # Summing policy_loss_sums and dividing once gives the same loss.
  sums = [dapo_loss.policy_loss_sums(data[n][0], data[n][1], data[n][2], data[n][3]) for n in "ab"]
  assert float((sums[0]["pg_loss"] + sums[1]["pg_loss"]) / total) == pytest.approx(float(whole), abs=1e-6)


def test_per_token_advantages_and_jit():
  per_token = np.broadcast_to(ADVANTAGES[:, None], WEIGHTS.shape)
  loss = jax.jit(dapo_loss.policy_loss, static_argnames="clip")(jnp.asarray(LOGP), OLD_LOGP, per_token, WEIGHTS)[0]
  assert float(loss) == pytest.approx(HAND_SUM / 6, abs=1e-5)


def test_an_all_masked_batch_gives_zero():
  loss, metrics = dapo_loss.policy_loss(jnp.asarray(LOGP), OLD_LOGP, ADVANTAGES, np.zeros_like(WEIGHTS))
  assert float(loss) == 0.0 and float(metrics["valid_tokens"]) == 0.0


def test_log_probs_and_entropy_from_logits():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 7)).astype(np.float32))
  targets = jnp.asarray([[0, 1, 2, 3], [6, 5, 4, 3]])
  expected = jax.nn.log_softmax(logits)[jnp.arange(2)[:, None], jnp.arange(4)[None, :], targets]
  np.testing.assert_allclose(np.asarray(dapo_loss.token_log_probs(logits, targets)), np.asarray(expected), atol=1e-6)
  uniform = jnp.zeros((2, 4, 7))
  np.testing.assert_allclose(np.asarray(dapo_loss.token_entropy(uniform)), LN(7), atol=1e-6)
  _, metrics = _loss(logits=uniform)
  assert float(metrics["entropy"]) == pytest.approx(LN(7), abs=1e-5)


# -- group advantages --------------------------------------------------------------------------


def test_group_advantages_by_hand():
  advantages = np.asarray(group_advantages(np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [2.0, 4.0, 0.0, 2.0]])))
  # Row 0: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
  np.testing.assert_allclose(advantages[0], np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6), rtol=1e-6)
  np.testing.assert_array_equal(advantages[1], 0.0)  # Equal rewards: no signal.
  # Row 2: mean 2, unbiased std sqrt(8 / 3).
  np.testing.assert_allclose(advantages[2], np.array([0, 2, -2, 0]) / (math.sqrt(8 / 3) + 1e-6), rtol=1e-6)


def test_a_group_of_one_has_zero_advantage():
  np.testing.assert_array_equal(np.asarray(group_advantages(np.array([[1.0], [0.0]]))), 0.0)
  with pytest.raises(ValueError, match="group axis"):
    group_advantages(np.float32(1.0))
