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


def _fitting_spec(partitioner, logical: LogicalAxes, shape: Sequence[int]) -> PartitionSpec:
  """The rules' spec for `logical`, with every dimension that its mesh axes do not divide left whole (a batch of
  one example at initialisation is computed on every device rather than split)."""
  if logical is None:
    return PartitionSpec()
  sizes = dict(zip(partitioner.mesh.axis_names, partitioner.mesh.devices.shape))
  entries = []
  for entry, size in zip(partitioner.spec(logical), shape):
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    ways = 1
    for name in names:
      ways *= sizes[name]
    entries.append(entry if size % ways == 0 else None)
  return PartitionSpec(*entries)


def per_device(fn: Callable, *args, in_axes: Sequence[LogicalAxes], out_axes: LogicalAxes,
               out_shape: Sequence[int]):
  """`fn(*args)` on every device's local blocks; `in_axes` gives each argument's logical axes (None for an
  argument that is None or replicated), `out_axes` and `out_shape` the result's."""
  partitioner = current()
  if partitioner is None or partitioner.mesh.devices.size == 1:
    return fn(*args)
  in_specs = tuple(None if arg is None else _fitting_spec(partitioner, logical, arg.shape)
                   for arg, logical in zip(args, in_axes))
  return jax.shard_map(fn, mesh=partitioner.mesh, in_specs=in_specs,
                       out_specs=_fitting_spec(partitioner, out_axes, out_shape), check_vma=False)(*args)


def attention(attend: Callable, q: jax.Array, k: jax.Array, v: jax.Array,
              segment_ids: Optional[jax.Array] = None) -> jax.Array:
  """`attend(q, k, v, segment_ids)` ([batch, length, heads, head_dim] each) per device: batch and heads split as
  the rules say, sequences whole."""
  return per_device(attend, q, k, v, segment_ids, in_axes=(ATTENTION_AXES, ATTENTION_AXES, ATTENTION_AXES,
                                                           SEGMENT_AXES), out_axes=ATTENTION_AXES, out_shape=q.shape)
