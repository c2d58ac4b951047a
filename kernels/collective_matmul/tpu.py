"""The all-gather-matmul Pallas kernel for TPU (Mosaic), on one device's blocks inside shard_map.

Each device starts with its rows x [m, k] and its weight columns w [k, n] and produces y [size*m, n]: every
device's rows times its columns.

Communication. The rows travel the ring by remote DMA into a gathered buffer `x_all` [size, m, k] (an extra
output in HBM, so each ring slot is written exactly once and never overwritten while it is read). At ring step
s a device multiplies slot (idx+s) while two DMAs are in flight: the one forwarding that slot to its left
neighbour and the one bringing slot (idx+s+1) from its right neighbour.

Compute. A slot's matmul walks its (block_m x block_n) output tiles. Tile t's operands (a [block_m, k] row
block and a [k, block_n] column block) are copied HBM -> VMEM into one of two buffers while the MXU works on
tile t-1 from the other buffer; each result tile is copied back to HBM asynchronously through its own pair of
buffers.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu


def _slot_matmul(x_slot, w_ref, y_rows, x_buf, w_buf, y_buf, in_sems, out_sems, *, block_m, block_n):
  """y_rows [m, n] = x_slot [m, k] @ w_ref [k, n], tile by tile with double-buffered VMEM operands."""
  m = x_slot.shape[0]
  n = w_ref.shape[1]
  tiles_n = n // block_n
  num_tiles = (m // block_m) * tiles_n

  def operand_copies(tile, buf):
    i, j = tile // tiles_n, tile % tiles_n
    return (pltpu.make_async_copy(x_slot.at[pl.ds(i * block_m, block_m)], x_buf.at[buf], in_sems.at[0, buf]),
            pltpu.make_async_copy(w_ref.at[:, pl.ds(j * block_n, block_n)], w_buf.at[buf], in_sems.at[1, buf]))

  def result_copy(tile, buf):
    i, j = tile // tiles_n, tile % tiles_n
    return pltpu.make_async_copy(y_buf.at[buf], y_rows.at[pl.ds(i * block_m, block_m), pl.ds(j * block_n, block_n)],
                                 out_sems.at[buf])

  for copy in operand_copies(0, 0):
    copy.start()

  def body(tile, carry):
    buf = lax.rem(tile, 2)
    for copy in operand_copies(tile, buf):
      copy.wait()

    @pl.when(tile + 1 < num_tiles)
    def _():
      for copy in operand_copies(tile + 1, 1 - buf):
        copy.start()

    @pl.when(tile >= 2)
    def _():
      result_copy(tile - 2, buf).wait()  # the result buffer we are about to fill is free again

    y_buf[buf] = jnp.dot(x_buf[buf], w_buf[buf], preferred_element_type=jnp.float32).astype(y_buf.dtype)
    result_copy(tile, buf).start()
    return carry

  lax.fori_loop(0, num_tiles, body, 0)
  for last in range(max(num_tiles - 2, 0), num_tiles):
    result_copy(last, last % 2).wait()


def _kernel(x_ref, w_ref, y_ref, x_all_ref, x_buf, w_buf, y_buf, local_sem, ring_sems, in_sems, out_sems, *,
            axis: str, size: int, block_m: int, block_n: int):
  idx = lax.axis_index(axis)
  left = lax.rem(idx + size - 1, size)
  right = lax.rem(idx + 1, size)
  m = x_ref.shape[0]

  own = pltpu.make_async_copy(x_ref, x_all_ref.at[idx], local_sem)
  own.start()
  own.wait()

  # Both neighbours must be inside the kernel before anyone writes into their buffers.
  barrier = pltpu.get_barrier_semaphore()
  pl.semaphore_signal(barrier, 1, device_id={axis: left}, device_id_type=pl.DeviceIdType.MESH)
  pl.semaphore_signal(barrier, 1, device_id={axis: right}, device_id_type=pl.DeviceIdType.MESH)
  pl.semaphore_wait(barrier, 2)

  def ring_copy(slot):
    # Every slot has its own semaphores: a neighbour running a step ahead must not satisfy a wait meant for
    # an earlier slot, which byte-counting semaphores shared between slots would allow.
    return pltpu.make_async_remote_copy(x_all_ref.at[slot], x_all_ref.at[slot], ring_sems.at[0, slot],
                                        ring_sems.at[1, slot], device_id={axis: left},
                                        device_id_type=pl.DeviceIdType.MESH)

  for step in range(size):
    slot = lax.rem(idx + step, size)
    if step < size - 1:
      forward = ring_copy(slot)
      forward.start()
    _slot_matmul(x_all_ref.at[slot], w_ref, y_ref.at[pl.ds(slot * m, m)], x_buf, w_buf, y_buf, in_sems,
                 out_sems, block_m=block_m, block_n=block_n)
    if step < size - 1:
      forward.wait_send()
      ring_copy(lax.rem(slot + 1, size)).wait_recv()  # the right neighbour's slot idx+step+1 has arrived


def all_gather_matmul_local(x: jax.Array, w: jax.Array, *, axis: str, size: int, block_m: int, block_n: int,
                            interpret=False) -> jax.Array:
  """Inside shard_map: x [m, k], w [k, n] -> all_gather(x) @ w [size*m, n], on TPU (or interpreted)."""
  m, k = x.shape
  n = w.shape[1]
  kernel = functools.partial(_kernel, axis=axis, size=size, block_m=block_m, block_n=block_n)
  hbm = pl.BlockSpec(memory_space=pl.ANY)
  y, _ = pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((size * m, n), x.dtype), jax.ShapeDtypeStruct((size, m, k), x.dtype)),
      in_specs=[hbm, hbm],
      out_specs=(hbm, hbm),
      scratch_shapes=[
          pltpu.VMEM((2, block_m, k), x.dtype),
          pltpu.VMEM((2, k, block_n), w.dtype),
          pltpu.VMEM((2, block_m, block_n), x.dtype),
          pltpu.SemaphoreType.DMA,
          pltpu.SemaphoreType.DMA((2, size)),
          pltpu.SemaphoreType.DMA((2, 2)),
          pltpu.SemaphoreType.DMA((2,)),
      ],
      compiler_params=pltpu.CompilerParams(collective_id=0, has_side_effects=True),
      interpret=interpret,
      cost_estimate=pl.CostEstimate(flops=2 * size * m * k * n, transcendentals=0,
                                    bytes_accessed=(2 * size * m * k + k * n + size * m * n) * x.dtype.itemsize,
                                    remote_bytes_transferred=(size - 1) * m * k * x.dtype.itemsize),
  )(x, w)
  return y
