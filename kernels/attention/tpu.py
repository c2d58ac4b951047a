"""Flash attention for TPUs: Pallas Mosaic kernels, forward and backward.

Layout [batch, heads, length, head_dim], lengths padded to the block sizes by api.py. The grid's last axis
walks the other sequence in blocks ("arbitrary" semantics, so it runs in order on one core) while VMEM scratch
carries the online-softmax state or the gradient accumulators across it:

  forward   grid (b, h, q blocks, kv blocks): running max m, sum l and output acc per query block.
  dq        grid (b, h, q blocks, kv blocks): dq += ds k, with p recomputed from the saved log-sum-exp.
  dk, dv    grid (b, h, kv blocks, q blocks): dv += p^T do and dk += ds^T q.

Row statistics (m, l, lse, delta) are kept lane-broadcast as [rows, 128] float32, the layout Mosaic tiles
natively. Blocks a causal or block-causal mask hides are skipped, and their index maps are clamped to the last
visible block so that no DMA fetches them.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from shardline.kernels.attention import masking

F32 = jnp.float32
LANES = 128
_NN = (((1,), (0,)), ((), ()))  # a @ b
_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


def _dot(a, b, dims):
  return lax.dot_general(a, b, dims, preferred_element_type=F32)


def _segments(qs_ref, ks_ref):
  if qs_ref is None:
    return None, None
  return qs_ref[...], ks_ref[...]  # [block_q, 1] and [1, block_k]


def _forward_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc, *, scale,
                    block_q, block_k, kv_len, mask_kind, block_size, block_prefix):
  i, j = pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _():
    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, F32)
    l_sc[...] = jnp.zeros(l_sc.shape, F32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, F32)

  @pl.when(j * block_k < masking.last_visible_kv(mask_kind, block_size, (i + 1) * block_q, kv_len))
  def _():
    q_seg, kv_seg = _segments(qs_ref, ks_ref)
    s = _dot(q_ref[...], k_ref[...], _NT) * scale
    s = masking.apply(s, i * block_q, j * block_k, mask_kind=mask_kind, block_size=block_size,
                      block_prefix=block_prefix, kv_len=kv_len, q_segments=q_seg, kv_segments=kv_seg)
    m_prev = m_sc[...]
    m_next = jnp.maximum(m_prev, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - m_next[:, :1])
    alpha = jnp.exp(m_prev - m_next)
    m_sc[...] = m_next
    l_sc[...] = alpha * l_sc[...] + p.sum(axis=1, keepdims=True)
    acc_sc[...] = acc_sc[...] * alpha[:, :1] + _dot(p.astype(v_ref.dtype), v_ref[...], _NN)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    l = l_sc[...]
    o_ref[...] = (acc_sc[...] / l[:, :1]).astype(o_ref.dtype)
    lse_ref[...] = m_sc[...] + jnp.log(l)


def _probabilities_and_ds(q, k, v, do, lse, delta, q_start, kv_start, q_seg, kv_seg, statics):
  scale = statics["scale"]
  s = masking.apply(_dot(q, k, _NT) * scale, q_start, kv_start, mask_kind=statics["mask_kind"],
                    block_size=statics["block_size"], block_prefix=statics["block_prefix"],
                    kv_len=statics["kv_len"], q_segments=q_seg, kv_segments=kv_seg)
  p = jnp.exp(s - lse[:, :1])
  ds = p * (_dot(do, v, _NT) - delta[:, :1])
  return p, ds


def _dq_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_sc, **statics):
  i, j = pl.program_id(2), pl.program_id(3)
  block_q, block_k = statics["block_q"], statics["block_k"]

  @pl.when(j == 0)
  def _():
    dq_sc[...] = jnp.zeros(dq_sc.shape, F32)

  visible = masking.last_visible_kv(statics["mask_kind"], statics["block_size"], (i + 1) * block_q,
                                    statics["kv_len"])

  @pl.when(j * block_k < visible)
  def _():
    q_seg, kv_seg = _segments(qs_ref, ks_ref)
    k = k_ref[...]
    _, ds = _probabilities_and_ds(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...],
                                  i * block_q, j * block_k, q_seg, kv_seg, statics)
    dq_sc[...] += _dot(ds.astype(k.dtype), k, _NN)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = (dq_sc[...] * statics["scale"]).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_sc, dv_sc,
                **statics):
  j, i = pl.program_id(2), pl.program_id(3)
  block_q, block_k = statics["block_q"], statics["block_k"]

  @pl.when(i == 0)
  def _():
    dk_sc[...] = jnp.zeros(dk_sc.shape, F32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, F32)

  first = masking.first_visible_q(statics["mask_kind"], statics["block_size"], j * block_k)

  @pl.when((i + 1) * block_q > first)
  def _():
    q_seg, kv_seg = _segments(qs_ref, ks_ref)
    q, do = q_ref[...], do_ref[...]
    p, ds = _probabilities_and_ds(q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], i * block_q,
                                  j * block_k, q_seg, kv_seg, statics)
    dv_sc[...] += _dot(p.astype(do.dtype), do, _TN)
    dk_sc[...] += _dot(ds.astype(q.dtype), q, _TN)

  @pl.when(i == pl.num_programs(3) - 1)
  def _():
    dk_ref[...] = (dk_sc[...] * statics["scale"]).astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _last_kv_block(i, statics):
  end = masking.last_visible_kv(statics["mask_kind"], statics["block_size"], (i + 1) * statics["block_q"],
                                statics["kv_len"])
  return jnp.maximum(end - 1, 0) // statics["block_k"]


def _first_q_block(j, statics):
  return masking.first_visible_q(statics["mask_kind"], statics["block_size"], j * statics["block_k"]) // (
      statics["block_q"])


def _params(interpret, q, k, statics, matmuls, tensors):
  b, h, lq, d = q.shape
  fraction = masking.visible_fraction(statics["mask_kind"], statics["block_size"], lq, statics["kv_len"],
                                              statics["block_prefix"]) * (statics["kv_len"] / k.shape[2])
  return dict(compiler_params=pltpu.CompilerParams(
      dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")), interpret=interpret,
      cost_estimate=masking.cost(b, h, lq, k.shape[2], d, q.dtype.itemsize, fraction, matmuls, tensors))


def _in_specs(d, statics, q_major: bool, has_segments: bool):
  """Specs for (q, k, v, q_seg, kv_seg, do, lse, delta) on a (b, h, outer, inner) grid."""
  bq, bk = statics["block_q"], statics["block_k"]
  if q_major:  # outer = query block i, inner = key block j (clamped to the last visible one)
    qi = lambda b, h, i, j: i
    kj = lambda b, h, i, j: jnp.minimum(j, _last_kv_block(i, statics))
  else:  # outer = key block j, inner = query block i (clamped to the first visible one)
    qi = lambda b, h, j, i: jnp.maximum(i, _first_q_block(j, statics))
    kj = lambda b, h, j, i: j
  rows = lambda blk, idx, width: pl.BlockSpec((None, None, blk, width), lambda *g: (g[0], g[1], idx(*g), 0))
  segs = [None, None]
  if has_segments:
    segs = [pl.BlockSpec((None, bq, 1), lambda *g: (g[0], qi(*g), 0)),
            pl.BlockSpec((None, 1, bk), lambda *g: (g[0], 0, kj(*g)))]
  return [rows(bq, qi, d), rows(bk, kj, d), rows(bk, kj, d), *segs, rows(bq, qi, d), rows(bq, qi, LANES),
          rows(bq, qi, LANES)]


def _segment_arrays(q_seg, kv_seg):
  if q_seg is None:
    return None, None
  return q_seg[:, :, None], kv_seg[:, None, :]


def forward(q, k, v, q_seg: Optional[jax.Array], kv_seg: Optional[jax.Array], *, scale, block_q, block_k,
            kv_len, mask_kind, block_size, block_prefix=None, interpret=False):
  """o [b, h, lq, d] and lse [b, h, lq, 128] (float32, lane-broadcast)."""
  b, h, lq, d = q.shape
  statics = dict(scale=scale, block_q=block_q, block_k=block_k, kv_len=kv_len, mask_kind=mask_kind,
                 block_size=block_size, block_prefix=block_prefix)
  specs = _in_specs(d, statics, q_major=True, has_segments=q_seg is not None)[:5]
  out_rows = lambda width: pl.BlockSpec((None, None, block_q, width), lambda b, h, i, j: (b, h, i, 0))
  return pl.pallas_call(
      functools.partial(_forward_kernel, **statics),
      grid=(b, h, lq // block_q, k.shape[2] // block_k),
      in_specs=specs, out_specs=[out_rows(d), out_rows(LANES)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, lq, LANES), F32)],
      scratch_shapes=[pltpu.VMEM((block_q, LANES), F32), pltpu.VMEM((block_q, LANES), F32),
                      pltpu.VMEM((block_q, d), F32)],
      **_params(interpret, q, k, statics, matmuls=2, tensors=4))(q, k, v, *_segment_arrays(q_seg, kv_seg))


def backward(q, k, v, q_seg, kv_seg, o, lse, do, *, scale, block_q, block_k, kv_len, mask_kind, block_size,
             block_prefix=None, interpret=False):
  """dq, dk, dv from separate dq and dk/dv kernels."""
  b, h, lq, d = q.shape
  lk = k.shape[2]
  statics = dict(scale=scale, block_q=block_q, block_k=block_k, kv_len=kv_len, mask_kind=mask_kind,
                 block_size=block_size, block_prefix=block_prefix)
  delta = jnp.einsum("bhld,bhld->bhl", o.astype(F32), do.astype(F32))  # rowsum(o * do)
  delta = jnp.broadcast_to(delta[..., None], (b, h, lq, LANES))
  has_segments = q_seg is not None
  args = (q, k, v, *_segment_arrays(q_seg, kv_seg), do, lse, delta)
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, **statics),
      grid=(b, h, lq // block_q, lk // block_k),
      in_specs=_in_specs(d, statics, q_major=True, has_segments=has_segments),
      out_specs=pl.BlockSpec((None, None, block_q, d), lambda b, h, i, j: (b, h, i, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      scratch_shapes=[pltpu.VMEM((block_q, d), F32)],
      **_params(interpret, q, k, statics, matmuls=3, tensors=5))(*args)
  kv_out = pl.BlockSpec((None, None, block_k, d), lambda b, h, j, i: (b, h, j, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, **statics),
      grid=(b, h, lk // block_k, lq // block_q),
      in_specs=_in_specs(d, statics, q_major=False, has_segments=has_segments),
      out_specs=[kv_out, kv_out],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      scratch_shapes=[pltpu.VMEM((block_k, d), F32), pltpu.VMEM((block_k, d), F32)],
      **_params(interpret, q, k, statics, matmuls=4, tensors=6))(*args)
  return dq, dk, dv
