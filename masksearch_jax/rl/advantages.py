"""Group-relative advantages (GRPO / DAPO): each response's reward against its group's.

For a prompt's group of G responses with rewards R_1..R_G:

  A_i = (R_i - mean(R)) / (std(R) + eps)

with the unbiased (ddof=1) standard deviation and eps = 1e-6; a group of one gets A = 0 (it
has nothing to be compared with). Every token of response i shares A_i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPSILON = 1e-6


def group_advantages(rewards: jax.Array, *, epsilon: float = EPSILON) -> jax.Array:
  """The advantage of each response in its group.

  Args:
    rewards: [..., G] rewards, one group per row (the last axis is the group).
    epsilon: Added to the standard deviation (DAPO: 1e-6), so a group of equal rewards gets
      zeros instead of a division by zero.

  Returns:
    [..., G] float32 advantages; all zeros when G == 1.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim == 0:
    raise ValueError("rewards must have a group axis (the last one)")
  if rewards.shape[-1] == 1:
    return jnp.zeros_like(rewards)
  mean = jnp.mean(rewards, axis=-1, keepdims=True)
  std = jnp.std(rewards, axis=-1, keepdims=True, ddof=1)
  return (rewards - mean) / (std + epsilon)


__all__ = ["EPSILON", "group_advantages"]
