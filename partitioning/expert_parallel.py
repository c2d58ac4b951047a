"""Expert parallelism for per-expert computations that XLA cannot partition itself (Pallas kernels).

Expert buffers [experts, groups, capacity, features] are sharded by the rules (under the `expert` rule set:
experts over the `expert` mesh axis, routing groups over the batch axes); `map_experts` runs a function on each
device's local experts and groups inside shard_map. The expert weights arrive whole per local expert (their
fsdp split is gathered first, as for any fsdp weight).
"""
import math
from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

from shardline.partitioning import axes
from shardline.partitioning import context


def map_experts(fn: Callable, x: jax.Array, counts: jax.Array, *weights: jax.Array) -> jax.Array:
  """fn(x [E, G, C, M], counts [E, G], *weights [E, ...]) -> [E, G, C, N], on local experts and groups."""
  partitioner = context.current()
  if partitioner is None or partitioner.mesh.devices.size == 1:
    return fn(x, counts, *weights)
  expert_axes, group_axes = partitioner.spec((axes.EXPERT, axes.BATCH, None, None))[:2]
  if x.shape[1] % _ways(partitioner.mesh, group_axes):
    # Fewer routing groups than batch shards (initialisation runs a batch of one): each device takes them all.
    group_axes = None
  buffer = P(expert_axes, group_axes, None, None)
  weight_specs = tuple(P(expert_axes, *([None] * (w.ndim - 1))) for w in weights)
  return jax.shard_map(fn, mesh=partitioner.mesh, in_specs=(buffer, P(expert_axes, group_axes), *weight_specs),
                       out_specs=buffer, check_vma=False)(x, counts, *weights)


def _ways(mesh, spec) -> int:
  """How many ways a PartitionSpec entry (None, an axis name or a tuple of them) splits a dimension."""
  names = spec if isinstance(spec, tuple) else (spec,)
  return math.prod(mesh.shape[name] for name in names if name is not None)
