"""The plain reference for the collective matmul kernel: all_gather(x) @ w on local blocks."""
import jax
import jax.numpy as jnp
from jax import lax


def all_gather_matmul_local(x: jax.Array, w: jax.Array, axis: str) -> jax.Array:
  """Inside shard_map: x [m, k] (this device's rows), w [k, n] -> [size*m, n] = all_gather(x) @ w."""
  gathered = lax.all_gather(x, axis, tiled=True)  # [size*m, k]
  return jnp.dot(gathered, w, preferred_element_type=jnp.float32).astype(x.dtype)
