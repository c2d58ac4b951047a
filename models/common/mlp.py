"""The transformer feed-forward layer."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.partitioning import axes


class Mlp(nn.Module):
  """Dense -> GELU -> Dense, with kernels annotated (embed, mlp) and (mlp, embed)."""
  hidden_dim: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    wi = params_lib.param(self, "wi", params_lib.lecun_normal(), (width, self.hidden_dim), (axes.EMBED, axes.MLP))
    wo = params_lib.param(self, "wo", params_lib.lecun_normal(), (self.hidden_dim, width), (axes.MLP, axes.EMBED))
    h = jnp.einsum("...e,em->...m", x, wi.astype(self.dtype))
    if self.use_bias:
      h = h + params_lib.param(self, "bi", params_lib.zeros(), (self.hidden_dim,), (axes.MLP,)).astype(self.dtype)
    h = nn.gelu(h)
    y = jnp.einsum("...m,me->...e", h, wo.astype(self.dtype))
    if self.use_bias:
      y = y + params_lib.param(self, "bo", params_lib.zeros(), (width,), (axes.EMBED,)).astype(self.dtype)
    return y
