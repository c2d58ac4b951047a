"""The attention entry point the models call: validates inputs and dispatches on the implementation.

Implementations:
  * 'xla': `reference.attention`, plain einsums; the default on CPU.
  * 'cudnn': `jax.nn.dot_product_attention(implementation='cudnn')` (GPU only).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from shardline.kernels.attention import reference

IMPLEMENTATIONS = ("xla", "cudnn")


def validate(q: jax.Array, k: jax.Array, v: jax.Array, mask_kind: str, block_size: Optional[int],
             q_segment_ids: Optional[jax.Array], kv_segment_ids: Optional[jax.Array]) -> None:
  """Raises ValueError with a clear message when shapes, dtypes or mask arguments do not fit together."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects q, k, v of rank 4 [batch, length, heads, head_dim]; got "
                     f"{q.shape}, {k.shape}, {v.shape}.")
  if k.shape != v.shape:
    raise ValueError(f"attention: k {k.shape} and v {v.shape} must have the same shape.")
  if q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
    raise ValueError(f"attention: q {q.shape} and k {k.shape} must agree on batch, heads and head_dim.")
  if not (q.dtype == k.dtype == v.dtype):
    raise ValueError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}).")
  if q.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
    raise ValueError(f"attention supports float32, bfloat16 and float16, not {q.dtype}.")
  if mask_kind not in reference.MASK_KINDS:
    raise ValueError(f"Unknown mask kind {mask_kind!r}; expected one of {reference.MASK_KINDS}.")
  if mask_kind == "block_causal" and not block_size:
    raise ValueError("mask_kind='block_causal' needs block_size, the tokens per block.")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("Pass both q_segment_ids and kv_segment_ids, or neither.")
  if q_segment_ids is not None and (q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != k.shape[:2]):
    raise ValueError(f"Segment ids must be [batch, length]: got {q_segment_ids.shape} for q {q.shape[:2]} and "
                     f"{kv_segment_ids.shape} for k {k.shape[:2]}.")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mask_kind: str = "none",
              block_size: Optional[int] = None, q_segment_ids: Optional[jax.Array] = None,
              kv_segment_ids: Optional[jax.Array] = None, implementation: str = "xla") -> jax.Array:
  """Multi-head attention; q, k, v are [batch, length, heads, head_dim]. Returns q's shape."""
  validate(q, k, v, mask_kind, block_size, q_segment_ids, kv_segment_ids)
  if implementation == "xla":
    return reference.attention(q, k, v, mask_kind=mask_kind, block_size=block_size,
                               q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
  if implementation == "cudnn":
    if mask_kind == "block_causal":
      raise ValueError("cudnn attention has no block-causal mask; use implementation='pallas' or 'xla'.")
    return jax.nn.dot_product_attention(q, k, v, is_causal=mask_kind == "causal", implementation="cudnn")
  raise ValueError(f"Unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.")
