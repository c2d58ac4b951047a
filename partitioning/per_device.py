"""Kernels on each device's own block of a sharded array.

XLA cannot partition a Pallas (Mosaic or Triton) custom call: under `jit` on more than one device, lowering stops
with "Mosaic kernels cannot be automatically partitioned. Please wrap the call in a shard_map." Models therefore
call such kernels through `per_device`, which runs the call in `shard_map` over the current partitioner's mesh,
with the specs its rules give the named logical axes: each device runs the kernel on its local block. Without a
partitioner (one device, eval_shape in tests) it is a plain call.
"""
from typing import Callable, Optional, Sequence

import jax
from jax.sharding import PartitionSpec

from shardline.partitioning import axes
from shardline.partitioning.context import current

# q, k, v and the output of attention: examples and heads split across devices, each sequence whole.
ATTENTION_AXES = (axes.BATCH, None, axes.HEADS, None)
SEGMENT_AXES = (axes.BATCH, None)

LogicalAxes = Optional[Sequence[Optional[str]]]


def per_device(fn: Callable, *args, in_axes: Sequence[LogicalAxes], out_axes: Sequence[Optional[str]]):
  """`fn(*args)` on every device's local blocks; `in_axes` gives each argument's logical axes (None for an
  argument that is None or replicated), `out_axes` the result's."""
  partitioner = current()
  if partitioner is None or partitioner.mesh.devices.size == 1:
    return fn(*args)
  spec = lambda logical: PartitionSpec() if logical is None else partitioner.spec(logical)
  in_specs = tuple(None if arg is None else spec(logical) for arg, logical in zip(args, in_axes))
  return jax.shard_map(fn, mesh=partitioner.mesh, in_specs=in_specs, out_specs=spec(out_axes),
                       check_vma=False)(*args)


def attention(attend: Callable, q: jax.Array, k: jax.Array, v: jax.Array,
              segment_ids: Optional[jax.Array] = None) -> jax.Array:
  """`attend(q, k, v, segment_ids)` ([batch, length, heads, head_dim] each) per device: batch and heads split as
  the rules say, sequences whole."""
  return per_device(attend, q, k, v, segment_ids,
                    in_axes=(ATTENTION_AXES, ATTENTION_AXES, ATTENTION_AXES, SEGMENT_AXES), out_axes=ATTENTION_AXES)
