"""The plain XLA grouped matmul the kernels are tested against.

Layout: tokens are already sorted into capacity buffers by expert and routing group. lhs [E, G, C, K] holds the
tokens expert e took from group g in rows 0..counts[e, g]-1 of its C slots (the router fills slots in order);
rhs [E, K, N] holds the experts' weights. The result [E, G, C, N] is lhs[e, g] @ rhs[e] on the filled rows and
zero on the empty ones.
"""
import jax
import jax.numpy as jnp


def row_mask(counts: jax.Array, capacity: int) -> jax.Array:
  """[E, G, C, 1]: True on filled rows."""
  return (jnp.arange(capacity) < counts[..., None])[..., None]


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, counts: jax.Array) -> jax.Array:
  """[E, G, C, K] x [E, K, N] -> [E, G, C, N], zero beyond each (expert, group)'s count."""
  # [e, g, c, k] x [e, k, n] -> [e, g, c, n]
  out = jnp.einsum("egck,ekn->egcn", lhs, rhs, preferred_element_type=jnp.float32)
  return jnp.where(row_mask(counts, lhs.shape[2]), out, 0).astype(lhs.dtype)
