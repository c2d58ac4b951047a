"""The grouped matmul for GPUs: Pallas on the Triton backend.

One program per (expert x group, row block, column block). A row block wholly past its count is skipped (its
output is zero): that is the work capacity padding would otherwise waste. K is walked in blocks with a float32
accumulator.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from shardline.kernels import kernel_names


def _kernel(counts_ref, lhs_ref, rhs_ref, out_ref, *, block_m, block_k):
  eg, i = pl.program_id(0), pl.program_id(1)
  count = counts_ref[eg]
  rows = i * block_m + lax.broadcasted_iota(jnp.int32, (block_m, 1), 0)

  def body(kk, acc):
    a = lhs_ref[:, pl.ds(kk * block_k, block_k)]
    b = rhs_ref[pl.ds(kk * block_k, block_k), :]
    return acc + lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

  acc = jnp.zeros(out_ref.shape, jnp.float32)
  # Row blocks wholly past the count do no matmul at all.
  acc = lax.cond(i * block_m < count,
                 lambda a: lax.fori_loop(0, lhs_ref.shape[1] // block_k, body, a), lambda a: a, acc)
  out_ref[...] = jnp.where(rows < count, acc, 0.0).astype(out_ref.dtype)


def grouped_matmul(lhs, rhs, counts, *, block_m, block_n, block_k, interpret=False, num_warps=4, num_stages=2):
  """[E, G, C, K] x [E, K, N] -> [E, G, C, N]; rows beyond counts[e, g] are zero."""
  e, g, c, k = lhs.shape
  n = rhs.shape[2]
  out = pl.pallas_call(
      functools.partial(_kernel, block_m=block_m, block_k=block_k),
      grid=(e * g, c // block_m, n // block_n),
      in_specs=[pl.BlockSpec((e * g,), lambda eg, i, j: (0,)),
                pl.BlockSpec((None, block_m, k), lambda eg, i, j: (eg, i, 0)),
                pl.BlockSpec((None, k, block_n), lambda eg, i, j: (eg // g, 0, j))],
      out_specs=pl.BlockSpec((None, block_m, block_n), lambda eg, i, j: (eg, i, j)),
      out_shape=jax.ShapeDtypeStruct((e * g, c, n), lhs.dtype),
      compiler_params=plt.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      cost_estimate=pl.CostEstimate(flops=2 * e * g * c * k * n, transcendentals=0,
                                    bytes_accessed=(e * g * c * (k + n) + e * k * n) * lhs.dtype.itemsize),
      name=kernel_names.with_flops("grouped_matmul", 2 * e * g * c * k * n),
      interpret=interpret,
  )(counts.reshape(-1).astype(jnp.int32), lhs.reshape(e * g, c, k), rhs)
  return out.reshape(e, g, c, n)
