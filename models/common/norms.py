"""LayerNorm with an optional bias: ViT-22B keeps the scale and drops the bias."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.partitioning import axes


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, computed in float32.

  Attributes:
    use_bias: learn a bias (ViT-22B: False).
    feature_axis: logical axis name of the normalised dimension.
    epsilon: variance floor.
    dtype: output dtype.
  """
  use_bias: bool = False
  feature_axis: str = axes.NORM
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * params_lib.param(self, "scale", params_lib.ones(), (features,), (self.feature_axis,))
    if self.use_bias:
      y = y + params_lib.param(self, "bias", params_lib.zeros(), (features,), (self.feature_axis,))
    return y.astype(self.dtype)
