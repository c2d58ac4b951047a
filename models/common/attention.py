"""Multi-head self-attention with logical axes, optional QK-norm, and the kernel api for the attention itself."""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.kernels.attention import api as attention_api
from shardline.kernels.attention import reference
from shardline.models.common import params as params_lib
from shardline.models.common.norms import LayerNorm
from shardline.partitioning import axes
from shardline.partitioning import per_device


class SelfAttention(nn.Module):
  """q, k, v and output projections around `kernels.attention.api.attention`.

  Attributes:
    num_heads, head_dim: the heads.
    qk_norm: LayerNorm on queries and keys.
    use_bias: biases on the four projections.
    mask_kind, block_size, block_prefix: the attention mask (see kernels/attention/reference.py); a block prefix
      makes the first tokens of every causal block see each other (MGDT's frame patches).
    implementation: 'auto', 'xla', 'pallas' or 'cudnn'.
    dtype: compute dtype.
  """
  num_heads: int
  head_dim: int
  qk_norm: bool = False
  use_bias: bool = True
  mask_kind: str = "none"
  block_size: Optional[int] = None
  block_prefix: Optional[int] = None
  implementation: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, segment_ids: Optional[jax.Array] = None) -> jax.Array:
    e, h, d = x.shape[-1], self.num_heads, self.head_dim
    init = params_lib.lecun_normal()
    qkv = params_lib.param(self, "qkv", init, (3, e, h, d), (None, axes.EMBED, axes.HEADS, axes.KV))
    out = params_lib.param(self, "out", init, (h, d, e), (axes.HEADS, axes.KV, axes.EMBED))
    # [b, l, e] x [3, e, h, d] -> [3, b, l, h, d]
    q, k, v = jnp.einsum("ble,tehd->tblhd", x, qkv.astype(self.dtype))
    if self.use_bias:
      bias = params_lib.param(self, "qkv_bias", params_lib.zeros(), (3, h, d), (None, axes.HEADS, axes.KV))
      q, k, v = q + bias[0].astype(self.dtype), k + bias[1].astype(self.dtype), v + bias[2].astype(self.dtype)
    if self.qk_norm:
      q = LayerNorm(feature_axis=axes.KV, dtype=self.dtype, name="query_norm")(q)
      k = LayerNorm(feature_axis=axes.KV, dtype=self.dtype, name="key_norm")(k)
    mask = dict(mask_kind=self.mask_kind, block_size=self.block_size, block_prefix=self.block_prefix)
    if self.is_mutable_collection("intermediates"):  # analysis only: the probabilities, for plots
      self.sow("intermediates", "attention_weights",
               reference.attention_weights(q, k, **mask))
    attend = lambda q, k, v, ids: attention_api.attention(
        q, k, v, **mask, q_segment_ids=ids, kv_segment_ids=ids, implementation=self.implementation)
    o = per_device.attention(attend, q, k, v, segment_ids)
    # [b, l, h, d] x [h, d, e] -> [b, l, e]
    y = jnp.einsum("blhd,hde->ble", o, out.astype(self.dtype))
    if self.use_bias:
      y = y + params_lib.param(self, "out_bias", params_lib.zeros(), (e,), (axes.EMBED,)).astype(self.dtype)
    return y
