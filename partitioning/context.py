"""The partitioner: a mesh plus a rule set, and the activation constraints that use it.

Training code enters `use_partitioner(...)` while it traces a step. Models call `constrain(x, logical_axes)` at
block boundaries and never see the mesh; without a partitioner (single-device tests, eval_shape) the
constraint is a no-op.
"""
import contextlib
import contextvars
import dataclasses
from typing import Iterator, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """A mesh and the rules that map logical axes onto it."""
  mesh: Mesh
  rules: rules_lib.Rules

  def spec(self, logical_axes: Sequence[Optional[str]]) -> PartitionSpec:
    """The PartitionSpec for an array with these logical axes."""
    return rules_lib.resolve_spec(logical_axes, self.rules, mesh_lib.axis_sizes(self.mesh))

  def sharding(self, logical_axes: Sequence[Optional[str]]) -> NamedSharding:
    """The NamedSharding for an array with these logical axes."""
    return NamedSharding(self.mesh, self.spec(logical_axes))

  def mesh_axes_of(self, logical_axis: str) -> tuple:
    """The mesh axes (size > 1) that `logical_axis` maps to when it is an array's only sharded axis."""
    entry = self.spec((logical_axis,))[0]
    if entry is None:
      return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)

  def replicated(self) -> NamedSharding:
    """A fully replicated sharding on this mesh."""
    return NamedSharding(self.mesh, PartitionSpec())


_CURRENT: contextvars.ContextVar = contextvars.ContextVar("shardline_partitioner", default=None)


@contextlib.contextmanager
def use_partitioner(partitioner: Optional[Partitioner]) -> Iterator[Optional[Partitioner]]:
  """Makes `partitioner` current while steps are traced."""
  token = _CURRENT.set(partitioner)
  try:
    yield partitioner
  finally:
    _CURRENT.reset(token)


def current() -> Optional[Partitioner]:
  """The partitioner in use, or None outside `use_partitioner`."""
  return _CURRENT.get()


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]]) -> jax.Array:
  """Constrains an activation's sharding at a block boundary; a no-op without a partitioner."""
  partitioner = current()
  if partitioner is None or partitioner.mesh.devices.size == 1:
    return x
  if len(logical_axes) != x.ndim:
    raise ValueError(f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for an array of "
                     f"shape {x.shape}.")
  return jax.lax.with_sharding_constraint(x, partitioner.sharding(logical_axes))
