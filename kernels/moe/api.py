"""The grouped matmul's entry point: validation, block sizes, gradients and dispatch.

grouped_matmul(lhs [E, G, C, K], rhs [E, K, N], counts [E, G]) -> [E, G, C, N]: the first counts[e, g] rows of
each (expert, routing group) buffer times the expert's weights, zero elsewhere. Implementations:
  * 'pallas' tpu.py on TPU, gpu.py (Triton) on GPU; interpret mode on CPU (tests only: slow).
  * 'xla'    reference.py: one batched einsum over every capacity slot, empty ones included.
  * 'ragged' ragged.py: the filled rows packed expert by expert and multiplied by `jax.lax.ragged_dot`.
  * 'auto'   the implementation AUTO names for the platform being compiled for.
Gradients of 'pallas': d_lhs is the same grouped matmul against the transposed weights; d_rhs is lhs^T @ d_out
per expert over the filled rows (a batched matmul; the empty rows are zero in lhs). 'xla' and 'ragged' take
JAX's own gradients.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from shardline.kernels import platform as platform_lib
from shardline.kernels.moe import gpu, ragged, reference, tpu

IMPLEMENTATIONS = ("xla", "pallas", "ragged", "auto")

# What 'auto' takes on each platform: (implementation, the measurement behind it). Only a measurement by
# `python -m benchmarks.moe_layer` on that platform (every candidate in one run) may change an entry; where none
# exists the entry keeps the implementation the models used before 'auto' existed, and says so.
AUTO = {
    "gpu": ("pallas", "not measured: no GPU run has compared 'pallas', 'ragged' and 'xla' yet (the 2026-11-22 "
                      "H100 run compared only 'pallas' with one-hot dispatch); 'pallas' was the choice before 'auto'"),
    "tpu": ("pallas", "not measured: no TPU has run the benchmark; 'pallas' was the choice before 'auto'"),
    "cpu": ("xla", "measured 2026-12-04 on the 2-core development CPU, jax 0.10.2, float32, 4096 tokens, width "
                   "256, expert MLP 1024, groups of 1024: layer step 151.8 / 154.4 ms with 'xla' against 866.9 / "
                   "3388.4 ms with 'ragged' at 8 / 32 experts (XLA:CPU turns ragged_dot into a dense dot against "
                   "every expert; benchmarks/results/cpu_20261204/moe_layer.log); 'pallas' only "
                   "interprets on CPU"),
}


def resolve(implementation: str, platform: str) -> str:
  """The implementation to run: `implementation` itself, or AUTO's entry for the platform when it is 'auto'."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown grouped matmul implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.")
  return AUTO.get(platform, AUTO["cpu"])[0] if implementation == "auto" else implementation


def validate(lhs: jax.Array, rhs: jax.Array, counts: jax.Array) -> None:
  """Raises ValueError with a clear message for inputs the kernels cannot take."""
  if lhs.ndim != 4 or rhs.ndim != 3 or counts.ndim != 2:
    raise ValueError(f"grouped_matmul expects lhs [E, G, C, K], rhs [E, K, N], counts [E, G]; got {lhs.shape}, "
                     f"{rhs.shape}, {counts.shape}.")
  if lhs.shape[0] != rhs.shape[0] or lhs.shape[:2] != counts.shape or lhs.shape[3] != rhs.shape[1]:
    raise ValueError(f"grouped_matmul: expert counts or K differ: lhs {lhs.shape}, rhs {rhs.shape}, counts "
                     f"{counts.shape}.")
  if lhs.dtype != rhs.dtype:
    raise ValueError(f"grouped_matmul: lhs {lhs.dtype} and rhs {rhs.dtype} must share a dtype.")


def _fit(size: int, preferred: int, align: int) -> int:
  """The largest block <= preferred dividing size, a multiple of align when possible, else the whole size."""
  for block in range(min(preferred, size), 0, -1):
    if size % block == 0 and block % align == 0:
      return block
  return size


def block_sizes(backend: str, c: int, k: int, n: int):
  """(block_m, block_n, block_k). TPU tiles align to (8, 128) and divide the sizes; GPU (Triton) blocks are
  powers of two >= 16, and `_pallas` pads the sizes up to multiples of them."""
  if backend == "tpu":
    return _fit(c, 256, 8), _fit(n, 512, 128), _fit(k, 512, 128)
  pow2 = lambda size, cap: max(16, min(cap, 1 << max(size - 1, 0).bit_length()))
  return pow2(c, 64), pow2(n, 128), pow2(k, 64)


def _pad_to(x, axis: int, multiple: int):
  extra = -x.shape[axis] % multiple
  return x if not extra else jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])


def _pallas(lhs, rhs, counts, backend, interpret):
  c, n = lhs.shape[2], rhs.shape[2]
  bm, bn, bk = block_sizes(backend, c, lhs.shape[3], n)
  module = tpu if backend == "tpu" else gpu
  # Padded rows lie past every count (zero output), padded K contributes zeros, padded columns are cut off.
  lhs, rhs = _pad_to(_pad_to(lhs, 2, bm), 3, bk), _pad_to(_pad_to(rhs, 1, bk), 2, bn)
  out = module.grouped_matmul(lhs, rhs, counts, block_m=bm, block_n=bn, block_k=bk, interpret=interpret)
  return out[:, :, :c, :n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _grouped(lhs, rhs, counts, backend, interpret):
  return _pallas(lhs, rhs, counts, backend, interpret)


def _grouped_fwd(lhs, rhs, counts, backend, interpret):
  return _pallas(lhs, rhs, counts, backend, interpret), (lhs, rhs, counts)


def _grouped_bwd(backend, interpret, residuals, d_out):
  lhs, rhs, counts = residuals
  d_out = jnp.where(reference.row_mask(counts, lhs.shape[2]), d_out, 0)
  d_lhs = _pallas(d_out, jnp.swapaxes(rhs, 1, 2), counts, backend, interpret)
  # [e, g, c, k] x [e, g, c, n] -> [e, k, n]
  d_rhs = jnp.einsum("egck,egcn->ekn", lhs, d_out, preferred_element_type=jnp.float32).astype(rhs.dtype)
  return d_lhs, d_rhs, None


_grouped.defvjp(_grouped_fwd, _grouped_bwd)


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, counts: jax.Array, implementation: str = "pallas",
                   backend: Optional[str] = None, interpret=None) -> jax.Array:
  """[E, G, C, K] x [E, K, N] -> [E, G, C, N], zero beyond each count; differentiable in lhs and rhs.

  `backend` and `interpret` apply to 'pallas' only: the kernel ('tpu' or 'gpu'; the platform's by default) and
  interpret mode (on CPU by default).
  """
  validate(lhs, rhs, counts)
  platform = platform_lib.target_platform()
  implementation = resolve(implementation, platform)
  if implementation == "xla":
    return reference.grouped_matmul(lhs, rhs, counts)
  if implementation == "ragged":
    return ragged.grouped_matmul(lhs, rhs, counts)
  backend = backend or ("tpu" if platform == "tpu" else "gpu")
  if interpret is None and platform == "cpu":
    from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
    interpret = pltpu.InterpretParams() if backend == "tpu" else True
  return _grouped(lhs, rhs, counts.astype(jnp.int32), backend, interpret)
