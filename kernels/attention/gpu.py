"""Flash attention for GPUs: Pallas on the Triton backend, forward and backward.

Layout [batch, length, heads, head_dim], lengths already padded to the block sizes by api.py. Each program
handles one (batch, head, block) and loops over the other sequence in blocks with an online softmax, so the
[length x length] matrix never exists:

  forward   one query block; keys and values stream past; writes o and the row log-sum-exp.
  dq        one query block; recomputes p = exp(s - lse) per key block; dq += (p * (dp - delta)) k.
  dk, dv    one key block; queries stream past; dv += p^T do, dk += ds^T q.

Blocks that a causal or block-causal mask hides completely are skipped, not just masked.
"""
import dataclasses
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from shardline.kernels.attention import masking
from shardline.kernels import kernel_names

F32 = jnp.float32


def _dot(a, b, trans_b=False):
  dims = (((1,), (1,)), ((), ())) if trans_b else (((1,), (0,)), ((), ()))
  return lax.dot_general(a, b, dims, preferred_element_type=F32)


def _forward_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, o_ref, lse_ref, *, scale, block_q, block_k, kv_len,
                    mask_kind, block_size, block_prefix):
  i = pl.program_id(2)
  q = q_ref[...]
  q_seg = qs_ref[...][:, None] if qs_ref is not None else None
  head_dim = q.shape[-1]
  end = masking.last_visible_kv(mask_kind, block_size, (i + 1) * block_q, kv_len)

  def body(j, carry):
    m, l, acc = carry
    start = j * block_k
    k = k_ref[pl.ds(start, block_k), :]
    v = v_ref[pl.ds(start, block_k), :]
    s = _dot(q, k, trans_b=True) * scale
    kv_seg = ks_ref[pl.ds(start, block_k)][None, :] if ks_ref is not None else None
    s = masking.apply(s, i * block_q, start, mask_kind=mask_kind, block_size=block_size,
                      block_prefix=block_prefix, kv_len=kv_len, q_segments=q_seg, kv_segments=kv_seg)
    m_new = jnp.maximum(m, s.max(axis=1))
    p = jnp.exp(s - m_new[:, None])
    alpha = jnp.exp(m - m_new)
    return m_new, l * alpha + p.sum(axis=1), acc * alpha[:, None] + _dot(p.astype(v.dtype), v)

  init = (jnp.full((block_q,), -jnp.inf, F32), jnp.zeros((block_q,), F32), jnp.zeros((block_q, head_dim), F32))
  m, l, acc = lax.fori_loop(0, pl.cdiv(end, block_k), body, init)
  o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log(l)


def _probabilities(q, k, lse, q_start, kv_start, q_seg, kv_seg, *, scale, mask_kind, block_size, block_prefix,
                   kv_len):
  s = masking.apply(_dot(q, k, trans_b=True) * scale, q_start, kv_start, mask_kind=mask_kind,
                    block_size=block_size, block_prefix=block_prefix, kv_len=kv_len, q_segments=q_seg,
                    kv_segments=kv_seg)
  return jnp.exp(s - lse[:, None])


def _dq_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, block_q,
               block_k, kv_len, mask_kind, block_size, block_prefix):
  i = pl.program_id(2)
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  q_seg = qs_ref[...][:, None] if qs_ref is not None else None
  end = masking.last_visible_kv(mask_kind, block_size, (i + 1) * block_q, kv_len)

  def body(j, dq):
    start = j * block_k
    k = k_ref[pl.ds(start, block_k), :]
    v = v_ref[pl.ds(start, block_k), :]
    kv_seg = ks_ref[pl.ds(start, block_k)][None, :] if ks_ref is not None else None
    p = _probabilities(q, k, lse, i * block_q, start, q_seg, kv_seg, scale=scale, mask_kind=mask_kind,
                       block_size=block_size, block_prefix=block_prefix, kv_len=kv_len)
    ds = p * (_dot(do, v, trans_b=True) - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k)

  dq = lax.fori_loop(0, pl.cdiv(end, block_k), body, jnp.zeros(q.shape, F32))
  dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, scale,
                block_q, block_k, kv_len, mask_kind, block_size, block_prefix):
  j = pl.program_id(2)
  k, v = k_ref[...], v_ref[...]
  kv_seg = ks_ref[...][None, :] if ks_ref is not None else None
  first = masking.first_visible_q(mask_kind, block_size, j * block_k) // block_q

  def body(i, carry):
    dk, dv = carry
    start = i * block_q
    q = q_ref[pl.ds(start, block_q), :]
    do = do_ref[pl.ds(start, block_q), :]
    lse = lse_ref[pl.ds(start, block_q)]
    delta = delta_ref[pl.ds(start, block_q)]
    q_seg = qs_ref[pl.ds(start, block_q)][:, None] if qs_ref is not None else None
    p = _probabilities(q, k, lse, start, j * block_k, q_seg, kv_seg, scale=scale, mask_kind=mask_kind,
                       block_size=block_size, block_prefix=block_prefix, kv_len=kv_len)
    # Padded query rows need no mask here: their output cotangent do is zero, so dv and ds get nothing.
    dv = dv + _dot(p.T.astype(do.dtype), do)
    ds = p * (_dot(do, v, trans_b=True) - delta[:, None])
    return dk + _dot(ds.T.astype(q.dtype), q), dv

  zeros = jnp.zeros(k.shape, F32)
  dk, dv = lax.fori_loop(first, pl.cdiv(q_ref.shape[0], block_q), body, (zeros, zeros))
  dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _specs(batch, heads, block, length, head_dim):
  """BlockSpecs over [batch, length, heads, head_dim] for a block of `block` rows (or the whole length)."""
  tiled = pl.BlockSpec((None, block, None, head_dim), lambda b, h, i: (b, i, h, 0))
  whole = pl.BlockSpec((None, length, None, head_dim), lambda b, h, i: (b, 0, h, 0))
  return tiled, whole


def _call(kernel, grid, in_specs, out_specs, out_shape, interpret, num_warps, num_stages, cost):
  name = f"attention_{kernel.func.__name__.strip('_').removesuffix('_kernel')}"
  return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
                        compiler_params=plt.CompilerParams(num_warps=num_warps, num_stages=num_stages),
                        interpret=interpret, cost_estimate=cost, name=kernel_names.with_flops(name, cost.flops))


def _cost(q, k, kv_len, mask_kind, block_size, block_prefix, matmuls, tensors):
  b, lq, h, d = q.shape
  fraction = masking.visible_fraction(mask_kind, block_size, lq, kv_len, block_prefix) * kv_len / k.shape[1]
  return masking.cost(b, h, lq, k.shape[1], d, q.dtype.itemsize, fraction, matmuls, tensors)


def _segment_specs(has_segments, block_q, q_pad, block_k, kv_pad, kv_major):
  if not has_segments:
    return [None, None]
  row = lambda blk: pl.BlockSpec((None, blk), lambda b, h, i: (b, i))
  whole = lambda n: pl.BlockSpec((None, n), lambda b, h, i: (b, 0))
  if kv_major:
    return [whole(q_pad), row(block_k)]
  return [row(block_q), whole(kv_pad)]


def forward(q, k, v, q_seg: Optional[jax.Array], kv_seg: Optional[jax.Array], *, scale, block_q, block_k,
            kv_len, mask_kind, block_size, block_prefix=None, interpret=False, num_warps=4, num_stages=2):
  """o [b, lq, h, d] and lse [b, h, lq] (float32)."""
  b, lq, h, d = q.shape
  lk = k.shape[1]
  q_tile, _ = _specs(b, h, block_q, lq, d)
  _, kv_whole = _specs(b, h, block_k, lk, d)
  kernel = functools.partial(_forward_kernel, scale=scale, block_q=block_q, block_k=block_k, kv_len=kv_len,
                             mask_kind=mask_kind, block_size=block_size, block_prefix=block_prefix)
  has_segments = q_seg is not None
  seg_specs = _segment_specs(has_segments, block_q, lq, block_k, lk, kv_major=False)
  return _call(kernel, (b, h, lq // block_q), [q_tile, kv_whole, kv_whole, *seg_specs],
               [q_tile, pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))],
               [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, lq), F32)],
               interpret, num_warps, num_stages,
               _cost(q, k, kv_len, mask_kind, block_size, block_prefix, matmuls=2, tensors=4))(q, k, v, q_seg, kv_seg)


def _backward_statics(scale, kv_len, mask_kind, block_size, block_prefix):
  return dict(scale=scale, kv_len=kv_len, mask_kind=mask_kind, block_size=block_size, block_prefix=block_prefix)


def dq(q, k, v, q_seg, kv_seg, do, lse, delta, *, scale, block_q, block_k, kv_len, mask_kind, block_size,
       block_prefix=None, interpret=False, num_warps=4, num_stages=2):
  """dq [b, lq, h, d]: one program per query block of `block_q` rows, key blocks of `block_k` stream past."""
  b, lq, h, d = q.shape
  lk = k.shape[1]
  q_tile, _ = _specs(b, h, block_q, lq, d)
  _, kv_whole = _specs(b, h, block_k, lk, d)
  stat_tile = pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))
  kernel = functools.partial(_dq_kernel, block_q=block_q, block_k=block_k,
                             **_backward_statics(scale, kv_len, mask_kind, block_size, block_prefix))
  return _call(kernel, (b, h, lq // block_q),
               [q_tile, kv_whole, kv_whole,
                *_segment_specs(q_seg is not None, block_q, lq, block_k, lk, kv_major=False),
               q_tile, stat_tile, stat_tile],
               q_tile, jax.ShapeDtypeStruct(q.shape, q.dtype), interpret, num_warps, num_stages,
               _cost(q, k, kv_len, mask_kind, block_size, block_prefix, matmuls=3, tensors=5))(
                   q, k, v, q_seg, kv_seg, do, lse, delta)


def dkv(q, k, v, q_seg, kv_seg, do, lse, delta, *, scale, block_q, block_k, kv_len, mask_kind, block_size,
        block_prefix=None, interpret=False, num_warps=4, num_stages=2):
  """dk, dv [b, lk, h, d]: one program per key block of `block_k` rows, query blocks of `block_q` stream past."""
  b, lq, h, d = q.shape
  lk = k.shape[1]
  _, q_whole = _specs(b, h, block_q, lq, d)
  kv_tile, _ = _specs(b, h, block_k, lk, d)
  stat_whole = pl.BlockSpec((None, None, lq), lambda b, h, i: (b, h, 0))
  kernel = functools.partial(_dkv_kernel, block_q=block_q, block_k=block_k,
                             **_backward_statics(scale, kv_len, mask_kind, block_size, block_prefix))
  return _call(kernel, (b, h, lk // block_k),
               [q_whole, kv_tile, kv_tile,
                *_segment_specs(q_seg is not None, block_q, lq, block_k, lk, kv_major=True),
                q_whole, stat_whole, stat_whole],
               [kv_tile, kv_tile], [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
               interpret, num_warps, num_stages,
               _cost(q, k, kv_len, mask_kind, block_size, block_prefix, matmuls=4, tensors=6))(
                   q, k, v, q_seg, kv_seg, do, lse, delta)


def backward(q, k, v, q_seg, kv_seg, o, lse, do, *, scale, kv_len, mask_kind, block_size, block_prefix=None,
             tuning: "Tuning", interpret=False):
  """dq, dk, dv from the separate dq and dk/dv kernels, each with its own blocks from `tuning`."""
  delta = jnp.einsum("blhd,blhd->bhl", o.astype(F32), do.astype(F32))  # rowsum(o * do)
  masks = dict(scale=scale, kv_len=kv_len, mask_kind=mask_kind, block_size=block_size, block_prefix=block_prefix,
               interpret=interpret)
  grad_q = dq(q, k, v, q_seg, kv_seg, do, lse, delta, block_q=tuning.dq[0], block_k=tuning.dq[1],
              num_warps=tuning.warps[1], num_stages=tuning.stages[1], **masks)
  grad_k, grad_v = dkv(q, k, v, q_seg, kv_seg, do, lse, delta, block_q=tuning.dkv[0], block_k=tuning.dkv[1],
                       num_warps=tuning.warps[2], num_stages=tuning.stages[2], **masks)
  return grad_q, grad_k, grad_v


@dataclasses.dataclass(frozen=True)
class Tuning:
  """Blocks (query rows, key rows), warps and software-pipeline stages of the forward, dq and dk/dv kernels.

  The defaults are the fastest of benchmarks.attention_tuning's sweep on an H100 (bf16, head dim 128, at 256
  and 8192 tokens; both lengths picked the same blocks): BENCHMARKS.md.
  """
  fwd: Tuple[int, int] = (128, 64)
  dq: Tuple[int, int] = (128, 64)
  dkv: Tuple[int, int] = (64, 64)
  warps: Tuple[int, int, int] = (8, 8, 4)  # forward, dq, dk/dv
  stages: Tuple[int, int, int] = (3, 3, 2)

  @classmethod
  def uniform(cls, block_q: int, block_k: int) -> "Tuning":
    """The same (block_q, block_k) in all three kernels (tests, and users who set blocks by hand)."""
    return cls(fwd=(block_q, block_k), dq=(block_q, block_k), dkv=(block_q, block_k))

  def padding_multiple(self) -> Tuple[int, int]:
    """Query and key lengths must be multiples of these (the largest block of each)."""
    return (max(self.fwd[0], self.dq[0], self.dkv[0]), max(self.fwd[1], self.dq[1], self.dkv[1]))


def choose_tuning(head_dim: int, itemsize: int, q_len: int, kv_len: int) -> Tuning:
  """The measured-best tuning for bf16 at head_dim <= 128 (BENCHMARKS.md), with blocks shrunk so that wider
  heads or float32 keep the same bytes per tile (shared memory is 227 KiB per block on an H100), and short
  sequences are not padded past the next power of two."""
  base = Tuning()
  shrink = max(1, (head_dim * itemsize) // (128 * 2))
  fit = lambda rows, length: max(16, min(rows // shrink, 1 << max(length - 1, 0).bit_length()))
  pair = lambda blocks: (fit(blocks[0], q_len), fit(blocks[1], kv_len))
  return dataclasses.replace(base, fwd=pair(base.fwd), dq=pair(base.dq), dkv=pair(base.dkv))
