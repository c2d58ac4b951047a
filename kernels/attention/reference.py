"""Plain XLA attention with the masks the models need; the reference every kernel is tested against.

Shapes: q [batch, q_len, heads, head_dim], k and v [batch, kv_len, heads, head_dim].

Masks:
  * 'none': every query sees every key (ViT-22B, LIMoE).
  * 'causal': query i sees keys j <= i.
  * 'block_causal': tokens are grouped in blocks of `block_size` (MGDT: one timestep); a query sees every key
    of all earlier blocks and, in its own block, the first `block_prefix` keys (MGDT: the frame's patches)
    and the keys up to itself. block_prefix=None (the default) shows the whole block.
  * segment ids (optional, any kind): a query sees only keys with the same segment id; id 0 is padding by
    convention but is not special here, so padded queries attend to padded keys and stay finite.
"""
from typing import Optional

import jax
import jax.numpy as jnp

MASK_KINDS = ("none", "causal", "block_causal")
# Large negative instead of -inf so fully masked rows stay finite.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def block_causal_keep(q_pos, kv_pos, block_size: int, block_prefix: Optional[int] = None):
  """True where a query at q_pos may see a key at kv_pos under the block-causal mask (broadcasting;
  numpy or jax integer positions)."""
  q_block, kv_block = q_pos // block_size, kv_pos // block_size
  if block_prefix is None or block_prefix >= block_size:
    return q_block >= kv_block
  kv_offset = kv_pos % block_size
  in_block = (kv_offset < block_prefix) | (kv_offset <= q_pos % block_size)
  return (q_block > kv_block) | ((q_block == kv_block) & in_block)


def make_mask(q_len: int, kv_len: int, kind: str, block_size: Optional[int] = None,
              q_segment_ids: Optional[jax.Array] = None, kv_segment_ids: Optional[jax.Array] = None,
              block_prefix: Optional[int] = None) -> Optional[jax.Array]:
  """A boolean mask [batch or 1, 1, q_len, kv_len] (True = attend), or None when nothing is masked."""
  mask = None
  if kind == "causal":
    mask = jnp.arange(q_len)[:, None] >= jnp.arange(kv_len)[None, :]
  elif kind == "block_causal":
    if not block_size:
      raise ValueError("block_causal attention needs block_size (tokens per block).")
    mask = block_causal_keep(jnp.arange(q_len)[:, None], jnp.arange(kv_len)[None, :], block_size, block_prefix)
  elif kind != "none":
    raise ValueError(f"Unknown mask kind {kind!r}; expected one of {MASK_KINDS}.")
  if mask is not None:
    mask = mask[None, None]
  if q_segment_ids is not None:
    seg = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]
    mask = seg if mask is None else jnp.logical_and(mask, seg)
  return mask


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mask_kind: str = "none",
              block_size: Optional[int] = None, q_segment_ids: Optional[jax.Array] = None,
              kv_segment_ids: Optional[jax.Array] = None, scale: Optional[float] = None,
              block_prefix: Optional[int] = None) -> jax.Array:
  """softmax(q k^T * scale + mask) v, with the softmax in float32. Returns [batch, q_len, heads, head_dim]."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  # [b, q, h, d] x [b, k, h, d] -> [b, h, q, k]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  mask = make_mask(q.shape[1], k.shape[1], mask_kind, block_size, q_segment_ids, kv_segment_ids, block_prefix)
  if mask is not None:
    logits = jnp.where(mask, logits, MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  # [b, h, q, k] x [b, k, h, d] -> [b, q, h, d]
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)


def attention_weights(q: jax.Array, k: jax.Array, *, mask_kind: str = "none",
                      block_size: Optional[int] = None, scale: Optional[float] = None,
                      block_prefix: Optional[int] = None) -> jax.Array:
  """The attention probabilities [batch, heads, q_len, kv_len], for analysis plots."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  mask = make_mask(q.shape[1], k.shape[1], mask_kind, block_size, block_prefix=block_prefix)
  if mask is not None:
    logits = jnp.where(mask, logits, MASK_VALUE)
  return jax.nn.softmax(logits, axis=-1)
