"""The partitioner: a device mesh, and logical axis rules that place arrays on it.

T5X users know this as the PjitPartitioner: mesh axes such as `data`, `fsdp`
and `tensor`, and `logical_axis_rules` mapping the model's logical axis names
(batch, vocab, embed, mlp, heads, kv_heads, kv, length, layers) to mesh axes.
Here it runs on today's JAX: `NamedSharding`, `jax.jit`, `jax.set_mesh`.

Before the first step `check_divisibility` compares every sharded dimension
with the mesh and names the parameter and axis that do not divide, instead of
letting the mismatch surface later from inside XLA or an async checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from masksearch_jax.errors import ConfigError

# Logical axis -> mesh axis (or axes, or None: replicated). The first rule for a
# name wins; `batch` spreads over every data-parallel axis.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", None),
    ("kv", None),
    ("length", None),
    ("layers", None),
)


@dataclasses.dataclass
class Partitioner:
  """A mesh built from named axis sizes, and the rules that map logical axes onto it.

  Attributes:
    mesh_axes: Ordered {mesh axis: size}; one size may be -1, meaning "the rest of
      the devices". Example: {'data': -1, 'fsdp': 2, 'tensor': 2}.
    logical_axis_rules: (logical axis, mesh axis | tuple of mesh axes | None) pairs.
    devices: The devices to lay out (default: all of `jax.devices()`, every host).
  """

  mesh_axes: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1})
  logical_axis_rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES
  devices: Sequence[Any] | None = None

  def __post_init__(self):
    self.mesh_axes = dict(self.mesh_axes)
    self.logical_axis_rules = tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                                    for name, axes in self.logical_axis_rules)
    self._mesh: Mesh | None = None

  # -- the mesh ----------------------------------------------------------------------------------

  def axis_sizes(self, num_devices: int) -> dict[str, int]:
    """`mesh_axes` with the -1 entry resolved for `num_devices` devices."""
    sizes = dict(self.mesh_axes)
    unknown = [name for name, size in sizes.items() if size == -1]
    if len(unknown) > 1:
      raise ConfigError(f"only one mesh axis may be -1, got {unknown}")
    if any(size < 1 and size != -1 for size in sizes.values()):
      raise ConfigError(f"mesh axis sizes must be positive or -1, got {sizes}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if unknown:
      if num_devices % known:
        raise ConfigError(f"mesh axes {sizes}: {num_devices} devices do not divide by {known}")
      sizes[unknown[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
      raise ConfigError(f"mesh axes {sizes} need {math.prod(sizes.values())} devices, but there are {num_devices}")
    return sizes

  @property
  def mesh(self) -> Mesh:
    if self._mesh is None:
      devices = list(self.devices if self.devices is not None else jax.devices())
      sizes = self.axis_sizes(len(devices))
      # Hosts stay together along the leading axes, as jax's mesh_utils lays them out.
      grid = np.array(sorted(devices, key=lambda d: (d.process_index, d.id))).reshape(tuple(sizes.values()))
      self._mesh = Mesh(grid, tuple(sizes))
    return self._mesh

  @contextlib.contextmanager
  def activate(self) -> Iterator[Mesh]:
    """Makes the mesh and the logical rules current (for jit and with_logical_constraint)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.logical_axis_rules):
      yield self.mesh

  # -- logical axes to shardings ---------------------------------------------------------------------

  def spec(self, logical_axes: Sequence[str | None]) -> PartitionSpec:
    """The PartitionSpec of an array whose dimensions have these logical names."""
    return nn.logical_to_mesh_axes(tuple(logical_axes), self.logical_axis_rules)

  def sharding(self, logical_axes: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical_axes))

  def shardings(self, boxed_tree: Any) -> Any:
    """NamedShardings for a tree whose leaves carry logical names (`nn.LogicallyPartitioned`);
    leaves without names are replicated."""
    def one(leaf):
      if isinstance(leaf, nn.LogicallyPartitioned):
        return self.sharding(leaf.names)
      return NamedSharding(self.mesh, PartitionSpec())
    return jax.tree_util.tree_map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

  def data_sharding(self, ndim: int = 2) -> NamedSharding:
    """How a batch is laid out: its first dimension over the data-parallel axes."""
    return self.sharding(("batch",) + (None,) * (ndim - 1))

  # -- checks -------------------------------------------------------------------------------------------

  def check_divisibility(self, boxed_tree: Any, what: str = "parameter") -> None:
    """Raises ValueError naming the first array dimension that its mesh axes do not divide."""
    sizes = dict(self.mesh.shape)
    leaves = jax.tree_util.tree_flatten_with_path(
        boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, leaf in leaves:
      if not isinstance(leaf, nn.LogicallyPartitioned):
        continue
      shape = leaf.value.shape
      for dim, (logical, mesh_axes) in enumerate(zip(leaf.names, self.spec(leaf.names))):
        if mesh_axes is None:
          continue
        axes = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
        parts = math.prod(sizes[a] for a in axes)
        if shape[dim] % parts:
          name = "/".join(str(getattr(k, "key", k)) for k in path)
          raise ConfigError(
              f"{what} {name}: dimension {dim} ('{logical}', size {shape[dim]}) does not divide by mesh axis "
              f"{'x'.join(axes)} (size {parts}); change the mesh or the logical_axis_rules for '{logical}'")

  def check_batch(self, global_batch_size: int) -> None:
    """Raises ValueError if the batch does not divide over the data-parallel axes and hosts."""
    axes = self.spec(("batch",))[0]
    axes = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
    parts = math.prod(self.mesh.shape[a] for a in axes)
    if global_batch_size % parts:
      raise ConfigError(f"batch size {global_batch_size} does not divide by mesh axes {'x'.join(axes)} "
                       f"(size {parts})")
    if global_batch_size % jax.process_count():
      raise ConfigError(f"batch size {global_batch_size} does not divide among {jax.process_count()} hosts")
