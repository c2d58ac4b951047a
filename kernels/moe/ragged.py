"""The grouped matmul as `jax.lax.ragged_dot`: tokens-major grouping, one tall matmul per expert.

The capacity buffers [E, G, C, K] hold each (expert, group)'s tokens in their first counts[e, g] rows. Here the
filled rows are gathered to the front of one [E * G * C, K] matrix, expert by expert (group by group within an
expert), so that expert e owns a contiguous run of sum_g counts[e, g] rows; `ragged_dot` multiplies each run by
its expert's weights, and the rows are gathered back into the buffers. Empty capacity costs only the gathers,
not matmul work, where the backend lowers ragged_dot to a grouped GEMM. Where it lowers it to a masked dense dot
(XLA:CPU does, computing every row against every expert), it costs E times the FLOPs: which backend does what is
what the MoE layer benchmark (benchmarks/moe_layer.py) measures, and api.AUTO records.

Gradients come from JAX's own rules for ragged_dot and gather, so there is no custom VJP here.
"""
import jax
import jax.numpy as jnp


def _layout(counts: jax.Array):
  """For counts [E, G]: the first packed row of each (expert, group), flattened [E * G] expert-major as the
  packed rows are, and the rows each expert owns [E]."""
  flat = counts.reshape(-1).astype(jnp.int32)
  return jnp.cumsum(flat) - flat, jnp.sum(counts, axis=1).astype(jnp.int32)


def pack(lhs: jax.Array, counts: jax.Array) -> jax.Array:
  """[E, G, C, K] -> [E * G * C, K]: the filled rows, expert-major, at the front; zero rows after them."""
  e, g, c, k = lhs.shape
  starts, _ = _layout(counts)
  flat_counts = counts.reshape(-1).astype(jnp.int32)
  row = jnp.arange(e * g * c, dtype=jnp.int32)
  # The (expert, group) whose run holds packed row p: the first whose run ends after p (empty runs end where they
  # start, so none of them is picked); rows past every run are masked below.
  owner = jnp.clip(jnp.searchsorted(starts + flat_counts, row, side="right"), 0, e * g - 1)
  slot = row - starts[owner]
  filled = slot < flat_counts[owner]
  source = owner * c + jnp.clip(slot, 0, c - 1)
  rows = jnp.take(lhs.reshape(e * g * c, k), source, axis=0)  # [E * G * C, K]
  return jnp.where(filled[:, None], rows, 0)


def unpack(rows: jax.Array, counts: jax.Array, capacity: int) -> jax.Array:
  """[E * G * C, N] packed rows -> buffers [E, G, C, N], zero beyond each count (the inverse of `pack`)."""
  e, g = counts.shape
  starts, _ = _layout(counts)
  slot = jnp.arange(capacity, dtype=jnp.int32)
  filled = slot[None, :] < counts.reshape(-1, 1)  # [E * G, C]
  source = jnp.where(filled, starts[:, None] + slot[None, :], 0)
  out = jnp.take(rows, source.reshape(-1), axis=0).reshape(e * g, capacity, rows.shape[-1])
  return jnp.where(filled[..., None], out, 0).reshape(e, g, capacity, rows.shape[-1])


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, counts: jax.Array) -> jax.Array:
  """[E, G, C, K] x [E, K, N] -> [E, G, C, N] through one ragged_dot over the packed rows; zero beyond counts."""
  c = lhs.shape[2]
  _, group_sizes = _layout(counts)
  # [E*G*C, K] x [E, K, N] with expert e taking group_sizes[e] consecutive rows -> [E*G*C, N]
  out = jax.lax.ragged_dot(pack(lhs, counts), rhs, group_sizes, preferred_element_type=jnp.float32)
  return unpack(out, counts, c).astype(lhs.dtype)
