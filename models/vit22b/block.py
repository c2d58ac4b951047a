"""The ViT-22B encoder block: parallel attention and MLP fed by one LayerNorm.

  parallel:    y = x + Attn(LN(x)) + MLP(LN(x))
  sequential:  x' = x + Attn(LN1(x)); y = x' + MLP(LN2(x'))   (the ablation, and the classic ViT's block)

The attention has no QKV biases and normalises queries and keys (QK-norm). In the parallel block the four
input projections (Q, K, V, MLP-in) share one input and the two output projections (attention-out, MLP-out)
sum into one output, which is what lets `linear_impl='async'` run each group as one collective matmul.
"""
from typing import Tuple

import flax.linen as nn
import jax

from shardline.kernels.attention import api as attention_api
from shardline.models.common import params as params_lib
from shardline.models.common.norms import LayerNorm
from shardline.models.vit22b import projections
from shardline.models.vit22b.config import ViT22BConfig
from shardline.partitioning import axes
from shardline.partitioning import per_device
from shardline.partitioning.context import constrain

RESIDUAL_AXES = (axes.BATCH, axes.LENGTH, axes.EMBED)


class Block(nn.Module):
  """One ViT-22B encoder block. Call signature fits `nn.scan`: (x, _) -> (x, None)."""
  config: ViT22BConfig

  def _weights(self) -> projections.BlockWeights:
    cfg = self.config
    e, h, d, m = cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    init = params_lib.lecun_normal()
    make = lambda name, shape, names: params_lib.param(self, name, init, shape, names)
    bias = lambda name, shape, names, use: (
        params_lib.param(self, name, params_lib.zeros(), shape, names) if use else None)
    qkv_names = (axes.EMBED, axes.HEADS, axes.KV)
    return projections.BlockWeights(
        query=make("query", (e, h, d), qkv_names),
        key=make("key", (e, h, d), qkv_names),
        value=make("value", (e, h, d), qkv_names),
        mlp_in=make("mlp_in", (e, m), (axes.EMBED, axes.MLP)),
        attn_out=make("attn_out", (h, d, e), (axes.HEADS, axes.KV, axes.EMBED)),
        mlp_out=make("mlp_out", (m, e), (axes.MLP, axes.EMBED)),
        qkv_bias=bias("qkv_bias", (3, h, d), (None, axes.HEADS, axes.KV), cfg.qkv_bias),
        mlp_in_bias=bias("mlp_in_bias", (m,), (axes.MLP,), cfg.mlp_bias),
        attn_out_bias=bias("attn_out_bias", (e,), (axes.EMBED,), cfg.out_bias),
        mlp_out_bias=bias("mlp_out_bias", (e,), (axes.EMBED,), cfg.mlp_bias),
    )

  def _norm(self, feature_axis: str, name: str) -> LayerNorm:
    cfg = self.config
    return LayerNorm(use_bias=cfg.layernorm_bias, feature_axis=feature_axis, epsilon=cfg.layernorm_epsilon,
                     dtype=params_lib.dtype_of(cfg.dtype), name=name)

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    cfg = self.config
    if cfg.qk_norm:
      q = self._norm(axes.KV, "query_norm")(q)
      k = self._norm(axes.KV, "key_norm")(k)
    attend = lambda q, k, v, _: attention_api.attention(q, k, v, implementation=cfg.attention_impl)
    return per_device.attention(attend, q, k, v)

  @nn.compact
  def __call__(self, x: jax.Array, _=None) -> Tuple[jax.Array, None]:
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    w = self._weights().cast(dtype)
    x = constrain(x, RESIDUAL_AXES)
    if cfg.parallel_block:
      y = self._norm(axes.EMBED, "norm")(x)
      q, k, v, hidden = projections.input_projections(y, w, cfg.linear_impl, cfg.async_bidirectional)
      o = self._attend(q, k, v)
      hidden = nn.gelu(hidden, approximate=cfg.gelu_approximate)
      x = x + projections.output_projections(o, hidden, w, cfg.linear_impl, cfg.async_bidirectional)
    else:
      y = self._norm(axes.EMBED, "attn_norm")(x)
      q, k, v = projections.qkv_projection(y, w)
      x = x + projections.attention_output(self._attend(q, k, v), w)
      y = self._norm(axes.EMBED, "mlp_norm")(x)
      x = x + projections.mlp(y, w, cfg.gelu_approximate)
    return constrain(x, RESIDUAL_AXES), None
