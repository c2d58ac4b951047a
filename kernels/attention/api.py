"""The attention entry point the models call: validation, block sizes, gradients and dispatch.

Implementations (gin: the models' `attention_impl`):
  * 'xla'    reference.py, plain einsums; the fastest on CPU.
  * 'pallas' the flash kernels: tpu.py (Mosaic) on TPU, gpu.py (Triton) on GPU; on CPU they run in
             interpret mode (tests), the GPU kernel unless `pallas_backend='tpu'`.
  * 'cudnn'  jax.nn.dot_product_attention(implementation='cudnn'), GPU only; no block-causal mask.
  * 'auto'   on GPU the implementation measured fastest at the nearest measured length for the mask and head
             dimension (MEASURED below), else cudnn where it supports the mask (none or causal, no segment ids)
             and pallas otherwise; pallas on TPU; xla on CPU (where the kernels only interpret).

Sequences of any length are padded up to the block sizes here; padded keys are removed inside the kernels and
padded queries sliced off, so every length works (ViT-22B's 256 tokens, MGDT's 156, odd ones).
"""
import dataclasses
import functools
import math
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from shardline.kernels import platform as platform_lib
from shardline.kernels.attention import gpu, reference, tpu

IMPLEMENTATIONS = ("auto", "xla", "pallas", "cudnn")

# What 'auto' takes where it was measured: (platform, mask kind, head_dim) -> [(sequence length, fastest
# implementation, its forward+backward ms, the other implementations' ms)], from `python -m benchmarks.attention`
# on one NVIDIA H100 80GB HBM3, jax 0.11.2, bfloat16, 2026-11-22 (BENCHMARKS.md, "Flash attention"; the log is
# benchmarks/results/h100_20261122/attention.log). Without segment ids only: none of these runs had them.
MEASURED = {
    ("gpu", "none", 128): [(256, "pallas", 0.753, {"cudnn": 0.866, "xla": 1.265}),
                           (576, "cudnn", 1.157, {"pallas": 1.471, "xla": 2.959}),
                           (1024, "cudnn", 1.200, {"pallas": 1.842, "xla": 3.514}),
                           (8192, "cudnn", 3.617, {"pallas": 5.627, "xla": 15.946})],
    ("gpu", "causal", 128): [(8192, "cudnn", 2.320, {"pallas": 3.350, "xla": 18.524})],
    ("gpu", "block_causal", 64): [(156, "pallas", 0.737, {"xla": 1.017})],  # cudnn has no block-causal mask
}
# A measurement stands for lengths within this factor of its own; beyond, 'auto' falls back to the rule.
MEASURED_REACH = 2.0


def validate(q: jax.Array, k: jax.Array, v: jax.Array, mask_kind: str, block_size: Optional[int],
             q_segment_ids: Optional[jax.Array], kv_segment_ids: Optional[jax.Array],
             block_prefix: Optional[int] = None) -> None:
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
  if block_prefix is not None and (mask_kind != "block_causal" or not 0 <= block_prefix <= block_size):
    raise ValueError(f"block_prefix={block_prefix} needs mask_kind='block_causal' and 0 <= block_prefix <= "
                     f"block_size ({block_size}); got mask_kind={mask_kind!r}.")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("Pass both q_segment_ids and kv_segment_ids, or neither.")
  if q_segment_ids is not None and (q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != k.shape[:2]):
    raise ValueError(f"Segment ids must be [batch, length]: got {q_segment_ids.shape} for q {q.shape[:2]} and "
                     f"{kv_segment_ids.shape} for k {k.shape[:2]}.")


def _cudnn_supports(mask_kind: str, segmented: bool) -> bool:
  return mask_kind in ("none", "causal") and not segmented


def choose(platform: str, mask_kind: str, length: int, head_dim: int, segmented: bool) -> Tuple[str, str]:
  """'auto''s implementation for a platform, mask and kv length, and why: (implementation, reason)."""
  rule = {"tpu": "pallas", "cpu": "xla"}.get(platform, "cudnn" if _cudnn_supports(mask_kind, segmented) else "pallas")
  rows = [] if segmented else MEASURED.get((platform, mask_kind, head_dim), [])
  near = [r for r in rows if max(r[0] / length, length / r[0]) <= MEASURED_REACH]
  if not near:
    return rule, f"no measurement within {MEASURED_REACH:g}x of {length} tokens; the platform's rule"
  # The nearest measured length on a log scale: 384 tokens lies between 256 and 576.
  measured_length, fastest, ms, others = min(near, key=lambda r: abs(math.log(r[0] / length)))
  return fastest, f"measured fastest at {measured_length} tokens ({ms} ms fwd+bwd; others {others})"


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def block_sizes(q_len: int, kv_len: int) -> Tuple[int, int]:
  """(block_q, block_k) of the TPU kernels: multiples of 128 (lanes), at most 512."""
  return min(512, _round_up(q_len, 128)), min(512, _round_up(kv_len, 128))


@dataclasses.dataclass(frozen=True)
class _Static:
  backend: str
  scale: float
  block_q: int
  block_k: int
  kv_len: int
  mask_kind: str
  block_size: Optional[int]
  block_prefix: Optional[int]
  interpret: Any
  gpu_tuning: Optional[gpu.Tuning] = None  # the GPU kernels' blocks, warps and stages


def _to_kernel(x, static):  # models' [b, l, h, d] -> the kernel's layout
  return x.transpose(0, 2, 1, 3) if static.backend == "tpu" else x


_from_kernel = _to_kernel  # the same transpose undoes itself


def _mask_args(static):
  return dict(scale=static.scale, kv_len=static.kv_len, mask_kind=static.mask_kind, block_size=static.block_size,
              block_prefix=static.block_prefix, interpret=static.interpret)


def _forward(static, q, k, v, q_seg, kv_seg):
  q, k, v = _to_kernel(q, static), _to_kernel(k, static), _to_kernel(v, static)
  if static.backend == "tpu":
    o, lse = tpu.forward(q, k, v, q_seg, kv_seg, block_q=static.block_q, block_k=static.block_k,
                         **_mask_args(static))
  else:
    t = static.gpu_tuning
    o, lse = gpu.forward(q, k, v, q_seg, kv_seg, block_q=t.fwd[0], block_k=t.fwd[1], num_warps=t.warps[0],
                         num_stages=t.stages[0], **_mask_args(static))
  return _from_kernel(o, static), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(static, q, k, v, q_seg, kv_seg):
  return _forward(static, q, k, v, q_seg, kv_seg)[0]


def _flash_fwd(static, q, k, v, q_seg, kv_seg):
  o, lse = _forward(static, q, k, v, q_seg, kv_seg)
  return o, (q, k, v, q_seg, kv_seg, o, lse)


def _flash_bwd(static, residuals, do):
  q, k, v, q_seg, kv_seg, o, lse = residuals
  t = lambda x: _to_kernel(x, static)
  if static.backend == "tpu":
    dq, dk, dv = tpu.backward(t(q), t(k), t(v), q_seg, kv_seg, t(o), lse, t(do), block_q=static.block_q,
                              block_k=static.block_k, **_mask_args(static))
  else:
    dq, dk, dv = gpu.backward(q, k, v, q_seg, kv_seg, o, lse, do, tuning=static.gpu_tuning, **_mask_args(static))
  return _from_kernel(dq, static), _from_kernel(dk, static), _from_kernel(dv, static), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q, k, v, *, mask_kind="none", block_size=None, q_segment_ids=None, kv_segment_ids=None,
                    backend: Optional[str] = None, block_q: Optional[int] = None, block_k: Optional[int] = None,
                    interpret=None, block_prefix: Optional[int] = None,
                    gpu_tuning: Optional[gpu.Tuning] = None) -> jax.Array:
  """The Pallas flash attention for any lengths; q, k, v [batch, length, heads, head_dim].

  Args:
    backend: 'tpu' or 'gpu' kernels; by default the platform's, and the GPU kernel on CPU.
    block_q, block_k: block sizes; chosen by `block_sizes` when omitted. On GPU, setting them uses the same
      blocks in the forward, dq and dk/dv kernels.
    gpu_tuning: the GPU kernels' blocks, warps and stages (`gpu.Tuning`); by default `gpu.choose_tuning`.
    interpret: interpret mode (True / InterpretParams); by default on CPU only.
  """
  platform = platform_lib.target_platform()
  backend = backend or ("tpu" if platform == "tpu" else "gpu")
  if interpret is None and platform == "cpu":
    from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
    interpret = pltpu.InterpretParams() if backend == "tpu" else True
  q_len, kv_len = q.shape[1], k.shape[1]
  if backend == "gpu":
    if gpu_tuning is None:
      gpu_tuning = (gpu.Tuning.uniform(block_q, block_k) if block_q and block_k else
                    gpu.choose_tuning(q.shape[-1], q.dtype.itemsize, q_len, kv_len))
    block_q, block_k = gpu_tuning.padding_multiple()
  else:
    default_q, default_k = block_sizes(q_len, kv_len)
    block_q, block_k = block_q or default_q, block_k or default_k
  q_pad, kv_pad = _round_up(q_len, block_q) - q_len, _round_up(kv_len, block_k) - kv_len
  pad = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2)) if n else x
  if q_segment_ids is not None:
    q_segment_ids = jnp.pad(q_segment_ids.astype(jnp.int32), [(0, 0), (0, q_pad)], constant_values=-1)
    kv_segment_ids = jnp.pad(kv_segment_ids.astype(jnp.int32), [(0, 0), (0, kv_pad)], constant_values=-2)
  static = _Static(backend, q.shape[-1] ** -0.5, block_q, block_k, kv_len, mask_kind, block_size, block_prefix,
                   interpret, gpu_tuning)
  out = _flash(static, pad(q, q_pad), pad(k, kv_pad), pad(v, kv_pad), q_segment_ids, kv_segment_ids)
  return out[:, :q_len]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mask_kind: str = "none",
              block_size: Optional[int] = None, q_segment_ids: Optional[jax.Array] = None,
              kv_segment_ids: Optional[jax.Array] = None, implementation: str = "auto",
              block_prefix: Optional[int] = None) -> jax.Array:
  """Multi-head attention; q, k, v are [batch, length, heads, head_dim]. Returns q's shape.

  block_prefix (block_causal only): within a block, every token sees the block's first `block_prefix` tokens
  and the tokens up to itself (MGDT: the frame's patches, then causal return, action and reward tokens).
  """
  validate(q, k, v, mask_kind, block_size, q_segment_ids, kv_segment_ids, block_prefix)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.")
  if implementation == "auto":
    implementation = choose(platform_lib.target_platform(), mask_kind, k.shape[1], q.shape[-1],
                            q_segment_ids is not None)[0]
  if implementation == "xla":
    return reference.attention(q, k, v, mask_kind=mask_kind, block_size=block_size,
                               q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                               block_prefix=block_prefix)
  if implementation == "cudnn":
    if not _cudnn_supports(mask_kind, q_segment_ids is not None):
      raise ValueError("cudnn attention supports no mask or a causal mask, without segment ids; use "
                       "implementation='pallas' or 'xla' for block-causal or segmented attention.")
    return jax.nn.dot_product_attention(q, k, v, is_causal=mask_kind == "causal", implementation="cudnn")
  return flash_attention(q, k, v, mask_kind=mask_kind, block_size=block_size, q_segment_ids=q_segment_ids,
                         kv_segment_ids=kv_segment_ids, block_prefix=block_prefix)
