"""The collective matmul kernel's entry point: validation, block sizes, gradients and dispatch.

`all_gather_matmul(x, w, mesh, axis, batch_axes)` computes all_gather(x over `axis`, rows) @ w with the Pallas
TPU kernel (tpu.py) inside shard_map, in the layout of partitioning/async_linear.py:
x [b, M, K] split (batch_axes, axis, -), w [K, N] split (-, axis) -> y [b, M, N] split (batch_axes, -, axis).

Implementations: 'pallas' (the TPU kernel; on CPU it runs under TPU interpret mode, for tests) and 'xla'
(reference.py, an all_gather then a matmul). The gradient is the exact transpose, computed with XLA
collectives (reduce-scatter of dy @ w^T, and all_gather(x)^T @ dy); partitioning/async_linear.py pairs this
forward kernel with overlapped ring gradients instead.
"""
import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import Mesh, PartitionSpec as P

from shardline.kernels import platform as platform_lib
from shardline.kernels.collective_matmul import reference, tpu

IMPLEMENTATIONS = ("pallas", "xla")
DEFAULT_BLOCK_M = 256
DEFAULT_BLOCK_N = 512


def block_sizes(m: int, n: int, k: int, itemsize: int, vmem_budget: int = 12 * 2**20) -> Tuple[int, int]:
  """The largest TPU-aligned (block_m, block_n) dividing (m, n), at most the defaults, whose double-buffered
  VMEM operands and results (2 x ([block_m, k] + [k, block_n] + [block_m, block_n])) fit the budget.

  block_n is a multiple of 128 lanes and block_m of 8 sublanes, or the whole dimension when it has none.
  """
  def candidates(size, cap, align):
    aligned = [d for d in range(min(size, cap), 0, -1) if size % d == 0 and d % align == 0]
    return aligned or [size]
  for bn in candidates(n, DEFAULT_BLOCK_N, 128):
    for bm in candidates(m, DEFAULT_BLOCK_M, 8):
      if 2 * (bm * k + k * bn + bm * bn) * itemsize <= vmem_budget:
        return bm, bn
  raise ValueError(f"No collective-matmul tile of a [{m}, {k}] x [{k}, {n}] problem fits {vmem_budget >> 20} MiB "
                   "of VMEM; K is too large for whole-K tiles.")


def validate(x: jax.Array, w: jax.Array, mesh: Mesh, axis: str) -> None:
  """Raises ValueError with a clear message for shapes the kernel cannot take."""
  if x.ndim != 3 or w.ndim != 2:
    raise ValueError(f"all_gather_matmul expects x [b, M, K] and w [K, N]; got {x.shape} and {w.shape}.")
  if x.shape[2] != w.shape[0]:
    raise ValueError(f"all_gather_matmul: x's K ({x.shape[2]}) differs from w's ({w.shape[0]}).")
  if x.dtype != w.dtype or x.dtype not in (jnp.float32, jnp.bfloat16):
    raise ValueError(f"all_gather_matmul needs x and w of one dtype, float32 or bfloat16; got {x.dtype}, "
                     f"{w.dtype}.")
  size = mesh.shape[axis]
  if x.shape[1] % size or w.shape[1] % size:
    raise ValueError(f"all_gather_matmul over {axis!r} (size {size}) needs M={x.shape[1]} and N={w.shape[1]} "
                     f"divisible by {size}.")


def _local(implementation: str, axis: str, size: int, interpret):
  def fn(x, w):  # x [b, m, k] -> [b, size*m, n]
    b, m, k = x.shape
    if implementation == "xla":
      return jax.vmap(lambda xi: reference.all_gather_matmul_local(xi, w, axis))(x)
    # One kernel call for the whole local batch: its rows gather as [size, b*m], then reorder to [b, size*m].
    bm, bn = block_sizes(b * m, w.shape[1], k, x.dtype.itemsize)
    y = tpu.all_gather_matmul_local(x.reshape(b * m, k), w, axis=axis, size=size, block_m=bm, block_n=bn,
                                    interpret=interpret)
    return y.reshape(size, b, m, -1).transpose(1, 0, 2, 3).reshape(b, size * m, -1)
  return fn


def forward_fn(mesh: Mesh, axis: str, batch_axes: Sequence[str], implementation: str = "pallas",
               interpret=None):
  """The forward op alone, as a function of global (x, w), without a custom gradient."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown collective matmul implementation {implementation!r}; choose {IMPLEMENTATIONS}.")
  if interpret is None:
    interpret = pltpu.InterpretParams() if platform_lib.target_platform() != "tpu" else False
  batch = tuple(batch_axes)
  B = None if not batch else (batch[0] if len(batch) == 1 else batch)
  return jax.shard_map(_local(implementation, axis, mesh.shape[axis], interpret), mesh=mesh,
                       in_specs=(P(B, axis, None), P(None, axis)), out_specs=P(B, None, axis), check_vma=False)


@functools.lru_cache(maxsize=None)
def _with_grad(mesh: Mesh, axis: str, batch_axes: Tuple[str, ...], implementation: str, interpret):
  B = None if not batch_axes else (batch_axes[0] if len(batch_axes) == 1 else batch_axes)
  fwd = forward_fn(mesh, axis, batch_axes, implementation, interpret)

  def dx_local(dy, w):  # [b, M, n_local] x [n_local, K] -> reduce-scatter over rows
    return lax.psum_scatter(jnp.einsum("bmn,kn->bmk", dy, w), axis, scatter_dimension=1, tiled=True)

  def dw_local(x, dy):  # all_gather(x)^T @ dy, summed over the batch axes
    gathered = lax.all_gather(x, axis, axis=1, tiled=True)
    dw = jnp.einsum("bmk,bmn->kn", gathered, dy, preferred_element_type=jnp.float32)
    return lax.psum(dw, batch_axes) if batch_axes else dw

  dx = jax.shard_map(dx_local, mesh=mesh, in_specs=(P(B, None, axis), P(None, axis)), out_specs=P(B, axis, None),
                     check_vma=False)
  dw = jax.shard_map(dw_local, mesh=mesh, in_specs=(P(B, axis, None), P(B, None, axis)),
                     out_specs=P(None, axis), check_vma=False)

  @jax.custom_vjp
  def op(x, w):
    return fwd(x, w)

  op.defvjp(lambda x, w: (fwd(x, w), (x, w)),
            lambda res, g: (dx(g, res[1]).astype(res[0].dtype), dw(res[0], g).astype(res[1].dtype)))
  return op


def all_gather_matmul(x: jax.Array, w: jax.Array, mesh: Mesh, axis: str, batch_axes: Sequence[str] = (),
                      implementation: str = "pallas", interpret=None) -> jax.Array:
  """all_gather(x) @ w with a custom gradient; see the module docstring for layouts."""
  validate(x, w, mesh, axis)
  return _with_grad(mesh, axis, tuple(batch_axes), implementation, interpret)(x, w)
