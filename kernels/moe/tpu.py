"""The grouped matmul for TPUs: Pallas Mosaic with the experts' token counts prefetched into SMEM.

Grid (expert x group, row block, column block, K block) with K innermost ("arbitrary"), accumulating in a
float32 VMEM tile. Row blocks wholly past their count do no matmul, and their index maps point at row block 0,
so no DMA fetches them either.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu


def _kernel(counts_ref, lhs_ref, rhs_ref, out_ref, acc_ref, *, block_m):
  eg, i, kk = pl.program_id(0), pl.program_id(1), pl.program_id(3)
  count = counts_ref[eg]
  active = i * block_m < count

  @pl.when(kk == 0)
  def _():
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

  @pl.when(active)
  def _():
    acc_ref[...] += lax.dot_general(lhs_ref[...], rhs_ref[...], (((1,), (0,)), ((), ())),
                                    preferred_element_type=jnp.float32)

  @pl.when(kk == pl.num_programs(3) - 1)
  def _():
    rows = i * block_m + lax.broadcasted_iota(jnp.int32, acc_ref.shape, 0)
    out_ref[...] = jnp.where(rows < count, acc_ref[...], 0.0).astype(out_ref.dtype)


def grouped_matmul(lhs, rhs, counts, *, block_m, block_n, block_k, interpret=False):
  """[E, G, C, K] x [E, K, N] -> [E, G, C, N]; rows beyond counts[e, g] are zero."""
  e, g, c, k = lhs.shape
  n = rhs.shape[2]
  row_block = lambda eg, i, counts: jnp.where(i * block_m < counts[eg], i, 0)
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1,
      grid=(e * g, c // block_m, n // block_n, k // block_k),
      in_specs=[pl.BlockSpec((None, block_m, block_k),
                             lambda eg, i, j, kk, counts: (eg, row_block(eg, i, counts), kk)),
                pl.BlockSpec((None, block_k, block_n), lambda eg, i, j, kk, counts: (eg // g, kk, j))],
      out_specs=pl.BlockSpec((None, block_m, block_n), lambda eg, i, j, kk, counts: (eg, i, j)),
      scratch_shapes=[pltpu.VMEM((block_m, block_n), jnp.float32)])
  out = pl.pallas_call(
      functools.partial(_kernel, block_m=block_m),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((e * g, c, n), lhs.dtype),
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      cost_estimate=pl.CostEstimate(flops=2 * e * g * c * k * n, transcendentals=0,
                                    bytes_accessed=(e * g * c * (k + n) + e * k * n) * lhs.dtype.itemsize),
      interpret=interpret,
  )(counts.reshape(-1).astype(jnp.int32), lhs.reshape(e * g, c, k), rhs)
  return out.reshape(e, g, c, n)
