"""Pooling heads: multihead attention pooling (MAP) and global average pooling (GAP)."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.kernels.attention import api as attention_api
from shardline.models.common import params as params_lib
from shardline.models.common.mlp import Mlp
from shardline.models.common.norms import LayerNorm
from shardline.partitioning import axes
from shardline.partitioning import per_device


class MapHead(nn.Module):
  """Attention pooling: one learned probe attends over the tokens, followed by a residual MLP."""
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, _, e = x.shape
    if e % self.num_heads:
      raise ValueError(f"MAP head: width {e} is not divisible by {self.num_heads} heads.")
    d = e // self.num_heads
    probe = params_lib.param(self, "probe", nn.initializers.xavier_uniform(), (1, 1, e),
                             (None, None, axes.EMBED))
    wq = params_lib.param(self, "query", params_lib.lecun_normal(), (e, self.num_heads, d),
                          (axes.EMBED, axes.HEADS, axes.KV))
    wkv = params_lib.param(self, "key_value", params_lib.lecun_normal(), (2, e, self.num_heads, d),
                           (None, axes.EMBED, axes.HEADS, axes.KV))
    wo = params_lib.param(self, "out", params_lib.lecun_normal(), (self.num_heads, d, e),
                          (axes.HEADS, axes.KV, axes.EMBED))
    probe = jnp.broadcast_to(probe.astype(self.dtype), (b, 1, e))
    # [b, 1, e] x [e, h, d] -> [b, 1, h, d]
    q = jnp.einsum("ble,ehd->blhd", probe, wq.astype(self.dtype))
    # [b, n, e] x [2, e, h, d] -> [2, b, n, h, d]
    k, v = jnp.einsum("bne,tehd->tbnhd", x.astype(self.dtype), wkv.astype(self.dtype))
    o = per_device.attention(lambda q, k, v, _: attention_api.attention(q, k, v), q, k, v)
    # [b, 1, h, d] x [h, d, e] -> [b, 1, e]
    pooled = jnp.einsum("blhd,hde->ble", o, wo.astype(self.dtype))
    y = LayerNorm(use_bias=True, dtype=self.dtype, name="norm")(pooled)
    pooled = pooled + Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(y)
    return pooled[:, 0]


def global_average_pool(x: jax.Array) -> jax.Array:
  """[batch, length, embed] -> [batch, embed]."""
  return jnp.mean(x, axis=1)
