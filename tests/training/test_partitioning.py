"""Tests of the partitioner's mesh arithmetic and checks (one device; 8 fake devices in test_sharded_training)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from masksearch_jax.errors import ConfigError
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training.partitioning import Partitioner


def test_minus_one_takes_the_rest_of_the_devices():
  p = Partitioner({"data": -1, "fsdp": 2, "tensor": 2})
  assert p.axis_sizes(8) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert p.axis_sizes(16) == {"data": 4, "fsdp": 2, "tensor": 2}
  assert Partitioner({"data": 2, "fsdp": 4, "tensor": 1}).axis_sizes(8) == {"data": 2, "fsdp": 4, "tensor": 1}


@pytest.mark.parametrize("axes,devices,message", [
    ({"data": -1, "fsdp": -1}, 8, "only one mesh axis may be -1"),
    ({"data": -1, "fsdp": 3}, 8, "8 devices do not divide by 3"),
    ({"data": 2, "fsdp": 2}, 8, "need 4 devices, but there are 8"),
    ({"data": 0}, 8, "positive or -1"),
])
def test_impossible_meshes_are_named(axes, devices, message):
  with pytest.raises(ConfigError, match=message):
    Partitioner(axes).axis_sizes(devices)


def test_logical_rules_give_partition_specs():
  p = Partitioner({"data": -1, "fsdp": 1, "tensor": 1})
  assert p.spec(("batch", "length")) == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  assert p.spec(("embed", "mlp")) == jax.sharding.PartitionSpec("fsdp", "tensor")
  custom = Partitioner({"data": -1}, logical_axis_rules=[("batch", "data"), ("embed", None), ("mlp", None)])
  assert custom.spec(("embed", "mlp")) == jax.sharding.PartitionSpec(None, None)


def test_one_device_shards_everything_trivially():
  p = Partitioner()
  boxed = Decoder(TransformerConfig(vocab_size=64, d_model=32, num_heads=2, num_kv_heads=1, mlp_dim=64)).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  p.check_divisibility(boxed)
  shardings = p.shardings(boxed)
  assert jax.tree_util.tree_structure(shardings) == jax.tree_util.tree_structure(nn.unbox(boxed))
  p.check_batch(4)
