"""DAPO's policy loss in JAX: clip-higher, optional dual clip, token-level aggregation.

Per generated token t of response i, with advantage A_i and

  r_it = exp(clamp(logp_it - old_logp_it, -20, 20))

the token's loss is

  l_it = max(-A_i * r_it, -A_i * clip(r_it, 1 - eps_low, 1 + eps_high))
  l_it = min(l_it, -A_i * c)         where A_i < 0, with the dual clip c = clip_ratio_c

and the mini-batch loss is the weighted sum of l_it over every valid token of the whole
mini-batch (all its gradient-accumulation micro-batches) divided by the number of valid
tokens of the whole mini-batch: not a mean per sequence, nor per micro-batch. Tokens the
environment inserted (retrieved passages), the prompt and padding have loss weight 0. There
is no KL term and no entropy bonus; the KL to the old policy and the entropy are measured
for the logs only.

Gradient accumulation: give every micro-batch's `policy_loss` the valid-token count of the
whole mini-batch (`valid_token_count`); the sum of the micro-batches' losses (and of their
gradients, and of their metrics) is then the mini-batch's. Or add up `policy_loss_sums`
and divide once, as the SFT trainer does with its loss sums.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

LOG_RATIO_LIMIT = 20.0


@gin.configurable(module="masksearch_jax.rl.dapo_loss")
@dataclasses.dataclass(frozen=True)
class ClipSettings:
  """The clipping of DAPO's surrogate objective (hashable: a static argument under jit).

  Attributes:
    eps_low: The ratio is clipped below at 1 - eps_low (DAPO: 0.2).
    eps_high: The ratio is clipped above at 1 + eps_high; higher than eps_low
      ("clip-higher", DAPO: 0.28) so unlikely tokens of good responses can still rise.
    clip_ratio_c: The dual clip: for a negative advantage the loss of a token never exceeds
      -A * clip_ratio_c, so one token whose ratio exploded cannot dominate (3.0 by default,
      10.0 in DAPO's recipe; must be > 1). None turns the dual clip off.
  """

  eps_low: float = 0.2
  eps_high: float = 0.28
  clip_ratio_c: float | None = 3.0

  def __post_init__(self):
    if not 0 <= self.eps_low < 1:
      raise ValueError(f"eps_low must be in [0, 1), got {self.eps_low}")
    if self.eps_high < 0:
      raise ValueError(f"eps_high must be >= 0, got {self.eps_high}")
    if self.clip_ratio_c is not None and self.clip_ratio_c <= 1:
      raise ValueError(f"clip_ratio_c must be > 1 (or None), got {self.clip_ratio_c}")


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(target) of each position.

  Args:
    logits: [batch, length, vocab].
    targets: [batch, length] token ids.

  Returns:
    [batch, length] float32 log-probabilities.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def token_entropy(logits: jax.Array) -> jax.Array:
  """The entropy of each position's next-token distribution: [batch, length, vocab] -> [batch, length]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def valid_token_count(*loss_weights: jax.Array) -> jax.Array:
  """The total loss weight of a mini-batch: pass the loss weights of all its micro-batches.

  With 0/1 weights this is the number of tokens the policy generated (the `num_valid_tokens`
  every micro-batch's `policy_loss` must be given).
  """
  return sum(jnp.sum(jnp.asarray(w, jnp.float32)) for w in loss_weights)


def policy_loss_sums(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, loss_weights: jax.Array, *,
                     clip: ClipSettings = ClipSettings(), logits: jax.Array | None = None) -> dict[str, jax.Array]:
  """Weighted sums over the tokens of one (micro-)batch.

  Args:
    logp: [batch, length] log-probabilities of the sampled tokens under the current policy
      (differentiable).
    old_logp: [batch, length] their log-probabilities under the policy that sampled them.
      Read only where `loss_weights` > 0 (anything, even NaN, may stand elsewhere).
    advantages: [batch] per response (every token shares it) or [batch, length].
    loss_weights: [batch, length]: 1 on tokens the policy generated, 0 on environment
      tokens, the prompt and padding.
    clip: The clipping settings.
    logits: [batch, length, vocab] of the current policy, to measure its entropy; None skips
      it.

  Returns:
    {"pg_loss": sum of w * l_it, "weight": sum of w, "clip_low": weight of tokens held by
    the lower clip (A < 0, r < 1 - eps_low), "clip_high": weight of tokens held by the upper
    clip (A > 0, r > 1 + eps_high), "dual_clip": weight of tokens held by the dual clip
    (A < 0, r > c), "approx_kl": sum of w * ((r - 1) - log r) (k3, KL(old || current)),
    "ratio": sum of w * r, and with logits "entropy": sum of w * H}.
  """
  weights = jnp.asarray(loss_weights, jnp.float32)
  valid = weights > 0
  advantages = jnp.asarray(advantages, jnp.float32)
  if advantages.ndim == weights.ndim - 1:
    advantages = advantages[..., None]
  advantages = jnp.broadcast_to(advantages, weights.shape)
  logp = jnp.where(valid, logp.astype(jnp.float32), 0.0)
  old_logp = jnp.where(valid, jnp.asarray(old_logp, jnp.float32), 0.0)
  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip.eps_low, 1.0 + clip.eps_high)
  losses = jnp.maximum(unclipped, clipped)
  negative = advantages < 0
  dual = jnp.zeros_like(valid)
  if clip.clip_ratio_c is not None:
    bound = -advantages * clip.clip_ratio_c
    dual = negative & (bound < losses)
    losses = jnp.where(negative, jnp.minimum(losses, bound), losses)
  sums = {
      "pg_loss": jnp.sum(jnp.where(valid, losses * weights, 0.0)),
      "weight": jnp.sum(weights),
      "clip_low": jnp.sum(weights * (negative & (ratio < 1.0 - clip.eps_low))),
      "clip_high": jnp.sum(weights * ((advantages > 0) & (ratio > 1.0 + clip.eps_high))),
      "dual_clip": jnp.sum(weights * dual),
      "approx_kl": jax.lax.stop_gradient(jnp.sum(weights * ((ratio - 1.0) - log_ratio))),
      "ratio": jax.lax.stop_gradient(jnp.sum(weights * ratio)),
  }
  if logits is not None:
    sums["entropy"] = jax.lax.stop_gradient(jnp.sum(weights * token_entropy(logits)))
  return sums


def policy_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, loss_weights: jax.Array, *,
                num_valid_tokens: jax.Array | float | None = None, clip: ClipSettings = ClipSettings(),
                logits: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DAPO's token-level policy loss of one (micro-)batch, and its metrics.

  Args:
    logp, old_logp, advantages, loss_weights, clip, logits: As for `policy_loss_sums`.
    num_valid_tokens: The total loss weight of the whole mini-batch this micro-batch belongs
      to (`valid_token_count` of all its micro-batches); None uses this batch's own (a
      mini-batch of one micro-batch). At least 1 is used, so an all-masked batch gives 0.

  Returns:
    (loss, metrics): the loss is the weighted sum of token losses / `num_valid_tokens`;
    metrics are "pg_loss" (the same), "clip_frac_low", "clip_frac_high", "dual_clip_frac",
    "approx_kl", "ratio_mean" and with logits "entropy", each a sum over this batch's tokens
    / `num_valid_tokens` (so the micro-batches' metrics add up to the mini-batch's token
    means), and "valid_tokens" (this batch's total loss weight).
  """
  sums = policy_loss_sums(logp, old_logp, advantages, loss_weights, clip=clip, logits=logits)
  count = sums["weight"] if num_valid_tokens is None else jnp.asarray(num_valid_tokens, jnp.float32)
  count = jnp.maximum(count, 1.0)
  names = {"pg_loss": "pg_loss", "clip_low": "clip_frac_low", "clip_high": "clip_frac_high",
           "dual_clip": "dual_clip_frac", "approx_kl": "approx_kl", "ratio": "ratio_mean", "entropy": "entropy"}
  metrics = {names[k]: v / count for k, v in sums.items() if k != "weight"}
  metrics["valid_tokens"] = sums["weight"]
  return sums["pg_loss"] / count, metrics


__all__ = ["ClipSettings", "LOG_RATIO_LIMIT", "policy_loss", "policy_loss_sums", "token_entropy",
           "token_log_probs", "valid_token_count"]
