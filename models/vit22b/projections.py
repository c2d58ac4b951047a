"""The linear projections of a ViT-22B block, in the grouping that parallel layers allow.

`input_projections` computes Q, K, V and the MLP's first matmul from one normalised input; `output_projections`
sums the attention-output and MLP-output matmuls into one residual update. With `linear_impl='xla'` these are
plain einsums that XLA shards from the rules; with `linear_impl='async'` each group is one collective matmul
(partitioning/async_linear.py) whose communication overlaps its compute. The sequential block (ablation
only, and the classic ViT's) uses `qkv_projection`, `attention_output` and `mlp`.
"""
from typing import NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.partitioning import async_linear


class BlockWeights(NamedTuple):
  """The weights of one block. Shapes: e=width, h=heads, d=head_dim, m=mlp_dim."""
  query: jax.Array  # [e, h, d]
  key: jax.Array  # [e, h, d]
  value: jax.Array  # [e, h, d]
  mlp_in: jax.Array  # [e, m]
  attn_out: jax.Array  # [h, d, e]
  mlp_out: jax.Array  # [m, e]
  qkv_bias: Optional[jax.Array]  # [3, h, d]
  mlp_in_bias: Optional[jax.Array]  # [m]
  attn_out_bias: Optional[jax.Array]  # [e]
  mlp_out_bias: Optional[jax.Array]  # [e]

  def cast(self, dtype) -> "BlockWeights":
    return BlockWeights(*(None if w is None else w.astype(dtype) for w in self))


def qkv_projection(y: jax.Array, w: BlockWeights) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """[b, l, e] -> q, k, v, each [b, l, h, d]."""
  q = jnp.einsum("ble,ehd->blhd", y, w.query)
  k = jnp.einsum("ble,ehd->blhd", y, w.key)
  v = jnp.einsum("ble,ehd->blhd", y, w.value)
  if w.qkv_bias is not None:
    q, k, v = q + w.qkv_bias[0], k + w.qkv_bias[1], v + w.qkv_bias[2]
  return q, k, v


def attention_output(o: jax.Array, w: BlockWeights) -> jax.Array:
  """[b, l, h, d] -> [b, l, e]."""
  y = jnp.einsum("blhd,hde->ble", o, w.attn_out)
  return y if w.attn_out_bias is None else y + w.attn_out_bias


def mlp(y: jax.Array, w: BlockWeights, gelu_approximate: bool = True) -> jax.Array:
  """The sequential block's MLP: [b, l, e] -> [b, l, e], with the tanh-approximate or the exact GELU."""
  hidden = jnp.einsum("ble,em->blm", y, w.mlp_in)
  if w.mlp_in_bias is not None:
    hidden = hidden + w.mlp_in_bias
  out = jnp.einsum("blm,me->ble", nn.gelu(hidden, approximate=gelu_approximate), w.mlp_out)
  return out if w.mlp_out_bias is None else out + w.mlp_out_bias


def input_projections(y: jax.Array, w: BlockWeights, linear_impl: str, bidirectional: bool = False):
  """Q, K, V [b, l, h, d] and the MLP pre-activation [b, l, m] from one input y [b, l, e]."""
  if linear_impl in ("async", "pallas"):
    # One all-gather-matmul: y's length blocks travel the ring while each device multiplies by its heads'
    # Q, K, V columns and its MLP columns, concatenated. 'pallas' runs it as the TPU remote-DMA kernel.
    kernel = "pallas" if linear_impl == "pallas" else "xla"
    q, k, v, hidden = async_linear.fused_all_gather_matmul(y, (w.query, w.key, w.value, w.mlp_in),
                                                           bidirectional, kernel)
    if w.qkv_bias is not None:
      q, k, v = q + w.qkv_bias[0], k + w.qkv_bias[1], v + w.qkv_bias[2]
  elif linear_impl == "xla":
    q, k, v = qkv_projection(y, w)
    hidden = jnp.einsum("ble,em->blm", y, w.mlp_in)
  else:
    raise ValueError(f"Unknown linear_impl {linear_impl!r}.")
  if w.mlp_in_bias is not None:
    hidden = hidden + w.mlp_in_bias
  return q, k, v, hidden


def output_projections(o: jax.Array, hidden: jax.Array, w: BlockWeights, linear_impl: str,
                       bidirectional: bool = False) -> jax.Array:
  """attn_out(o) + mlp_out(hidden): [b, l, h, d] and [b, l, m] -> [b, l, e]."""
  if linear_impl in ("async", "pallas"):
    # One matmul-reduce-scatter: partial sums of both projections travel the ring together.
    out = async_linear.fused_matmul_reduce_scatter((o, hidden), (w.attn_out, w.mlp_out), bidirectional)
  elif linear_impl == "xla":
    out = jnp.einsum("blhd,hde->ble", o, w.attn_out) + jnp.einsum("blm,me->ble", hidden, w.mlp_out)
  else:
    raise ValueError(f"Unknown linear_impl {linear_impl!r}.")
  for b in (w.attn_out_bias, w.mlp_out_bias):
    if b is not None:
      out = out + b
  return out
