"""Masks of one (query block, key block) tile, shared by the GPU and TPU kernels.

Two kinds of masking, applied differently so that kernels reproduce the reference exactly:
  * the attention mask (causal, block-causal, segment ids) replaces a logit by MASK_VALUE, a large finite
    negative number, exactly as reference.py does. A row whose keys are all masked then attends uniformly,
    as in the reference, and stays finite;
  * padding (key positions at or beyond the true key length, added so lengths fit the block size) is
    removed entirely with -inf, so it never receives weight.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shardline.kernels.attention import reference

PAD_VALUE = -jnp.inf


def last_visible_kv(mask_kind: str, block_size: Optional[int], q_end, kv_len: int):
  """One past the last key a query in [.., q_end) may see (before padding is removed)."""
  if mask_kind == "causal":
    return jnp.minimum(q_end, kv_len)
  if mask_kind == "block_causal":
    return jnp.minimum(((q_end - 1) // block_size + 1) * block_size, kv_len)
  return kv_len


def first_visible_q(mask_kind: str, block_size: Optional[int], kv_start):
  """The first query that may see a key at kv_start (for skipping query blocks in the dk/dv pass)."""
  if mask_kind == "causal":
    return kv_start
  if mask_kind == "block_causal":
    return (kv_start // block_size) * block_size
  return 0


def apply(logits: jax.Array, q_start, kv_start, *, mask_kind: str, block_size: Optional[int], kv_len: int,
          block_prefix: Optional[int] = None, q_segments: Optional[jax.Array] = None,
          kv_segments: Optional[jax.Array] = None) -> jax.Array:
  """Masks a [block_q, block_k] tile of logits whose rows start at q_start and columns at kv_start.

  q_segments [block_q, 1] and kv_segments [1, block_k] are the tile's segment ids, if any.
  """
  shape = logits.shape
  q_pos = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
  kv_pos = kv_start + lax.broadcasted_iota(jnp.int32, shape, 1)
  keep = None
  if mask_kind == "causal":
    keep = q_pos >= kv_pos
  elif mask_kind == "block_causal":
    keep = reference.block_causal_keep(q_pos, kv_pos, block_size, block_prefix)
  if q_segments is not None:
    same = q_segments == kv_segments
    keep = same if keep is None else jnp.logical_and(keep, same)
  if keep is not None:
    logits = jnp.where(keep, logits, reference.MASK_VALUE)
  return jnp.where(kv_pos < kv_len, logits, PAD_VALUE)


def visible_fraction(mask_kind: str, block_size: Optional[int], q_len: int, kv_len: int,
                     block_prefix: Optional[int] = None) -> float:
  """The share of (query, key) pairs the mask keeps: the work a kernel that skips hidden blocks does."""
  q = np.arange(q_len)[:, None]
  k = np.arange(kv_len)[None, :]
  if mask_kind == "causal":
    return float(np.mean(q >= k))
  if mask_kind == "block_causal":
    return float(np.mean(reference.block_causal_keep(q, k, block_size, block_prefix)))
  return 1.0


def cost(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, itemsize: int, fraction: float,
         matmuls: int, tensors: int):
  """A pallas CostEstimate: `matmuls` [q_len x kv_len x head_dim] products over the visible pairs."""
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  pairs = batch * heads * q_len * kv_len * fraction
  return pl.CostEstimate(flops=int(2 * matmuls * pairs * head_dim), transcendentals=int(pairs),
                         bytes_accessed=int(tensors * batch * heads * max(q_len, kv_len) * head_dim * itemsize))
