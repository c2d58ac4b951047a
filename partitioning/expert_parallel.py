"""Expert parallelism for per-expert computations that XLA cannot partition itself (Pallas kernels).

Expert buffers [experts, groups, capacity, features] are sharded by the rules (under the `expert` rule set:
experts over the `expert` mesh axis, routing groups over the batch axes); `map_experts` runs a function on each
device's local experts and groups inside shard_map. The expert weights arrive whole per local expert (their
fsdp split is gathered first, as for any fsdp weight).
"""
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
  buffer = partitioner.spec((axes.EXPERT, axes.BATCH, None, None))
  expert_axes, group_axes = buffer[0], buffer[1]
  weight_specs = tuple(P(expert_axes, *([None] * (w.ndim - 1))) for w in weights)
  return jax.shard_map(fn, mesh=partitioner.mesh, in_specs=(buffer, P(expert_axes, group_axes), *weight_specs),
                       out_specs=buffer, check_vma=False)(x, counts, *weights)
