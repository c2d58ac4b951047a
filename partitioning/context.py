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
  """A mesh and the rules that map logical axes onto it.

  Attributes:
    mesh: the device mesh.
    rules: logical axis -> mesh axes.
    unroll_collective_loops: unroll every loop whose body holds collectives (layer scans, microbatches); see
      `collectives_need_unrolled_loops`.
  """
  mesh: Mesh
  rules: rules_lib.Rules
  unroll_collective_loops: bool = False

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


def collectives_need_unrolled_loops() -> bool:
  """Whether loops that hold collectives must be unrolled on this runtime: multi-process runs on the CPU backend.

  XLA:CPU's gloo collectives carry no per-operation tag, so the two ends of a connection pair operations by the
  order in which they are posted. And XLA:CPU's executor starts the collective after a while loop once the loop
  has been *launched*, not finished, when the loop's body ends asynchronously. A collective after a scanned layer
  stack can then be posted before the loop's last ones, in a different order on each process, and gloo aborts
  ("op.preamble.length <= op.nbytes. 2048 vs 32"). Seen in about 1 of 8 two-process runs under load. Without
  loops around collectives every process posts them in program order. GPU and TPU collectives are ordered on
  their streams and need none of this.
  """
  return jax.process_count() > 1 and jax.default_backend() == "cpu"


def scan_unroll(length: int) -> int:
  """The `unroll` for a scan of `length` steps whose body holds collectives: all of them when the current
  partitioner asks for unrolled collective loops, else 1."""
  partitioner = current()
  return length if partitioner is not None and partitioner.unroll_collective_loops else 1


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]]) -> jax.Array:
  """Constrains an activation's sharding at a block boundary; a no-op without a partitioner."""
  partitioner = current()
  if partitioner is None or partitioner.mesh.devices.size == 1:
    return x
  if len(logical_axes) != x.ndim:
    raise ValueError(f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for an array of "
                     f"shape {x.shape}.")
  return jax.lax.with_sharding_constraint(x, partitioner.sharding(logical_axes))
