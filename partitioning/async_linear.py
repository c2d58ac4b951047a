"""Asynchronous parallel linear operations: collective matmuls that overlap communication with compute.

When both the activations and the weights of a matmul are sharded over a ring of devices (the `tensor` mesh
axis), the all-gather of activations (or the reduce-scatter of partial sums) is decomposed into ring steps.
Each step multiplies the block a device already holds while `ppermute` moves the next block, so the matrix
unit never waits for a whole collective.

Layouts (T = ring size, B = the mesh axes of the batch):

  all_gather_matmul      x [b, M, K] split (B, ring, -)  @  w [K, N] split (-, ring)  ->  y [b, M, N] split (B, -, ring)
  matmul_reduce_scatter  x [b, M, K] split (B, -, ring)  @  w [K, N] split (ring, -)  ->  y [b, M, N] split (B, ring, -)

M is the gathered (scattered) dimension, the sequence in ViT-22B; K and N are feature dimensions. The
transpose of one op is the other, so the gradients are built from the same overlapped rings (`custom_vjp`),
and the weight gradients circulate activation blocks the same way. `bidirectional=True` sends half of every
block each way round the ring, halving the bytes per link per step.

`kernel='pallas'` runs the all-gather-matmul forward as the Pallas TPU kernel of kernels/collective_matmul
(remote DMAs instead of ppermute); its gradients use the same overlapped rings.

ViT-22B fuses its four input projections into one all-gather-matmul and its two output projections into one
matmul-reduce-scatter (`fused_all_gather_matmul`, `fused_matmul_reduce_scatter`). Models call those with
logical layouts only; the ring and batch mesh axes come from the current partitioner's rules.
"""
import functools
from typing import Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from shardline.kernels.collective_matmul import api as collective_matmul_api
from shardline.partitioning import context
from shardline.core.errors import UserError

F32 = jnp.float32


# --------------------------------------------------------------------------------------------------------
# Ring schedules on local blocks (inside shard_map).
# --------------------------------------------------------------------------------------------------------

def _shift(size: int, direction: int) -> List[Tuple[int, int]]:
  """ppermute pairs sending every device's block `direction` steps round the ring."""
  return [(j, (j + direction) % size) for j in range(size)]


def _pieces(rows: int, bidirectional: bool) -> List[Tuple[int, int, int]]:
  """(offset, length, direction) of the parts of a block that travel the ring: whole, or halves both ways."""
  if not bidirectional or rows < 2:
    return [(0, rows, -1)]
  half = rows // 2
  return [(0, half, -1), (half, rows - half, +1)]


def _circulate(block: jax.Array, axis: str, size: int, bidirectional: bool, consume: Callable, carry):
  """Passes `block` [b, m, ...] round the ring; calls consume(carry, piece, source_device, offset) per step.

  A piece moving with direction -1 (to the left neighbour) is, after s steps, the block of device idx + s;
  one moving +1 is the block of device idx - s. The ppermute that brings step s+1's piece is issued before
  step s's compute and does not depend on it, which is what lets the two overlap.
  """
  idx = lax.axis_index(axis)
  parts = [(lax.slice_in_dim(block, off, off + n, axis=1), off, d) for off, n, d in _pieces(block.shape[1],
                                                                                             bidirectional)]
  for step in range(size):
    arriving = [lax.ppermute(p, axis, _shift(size, d)) if step < size - 1 else None for p, _, d in parts]
    for piece, offset, direction in parts:
      carry = consume(carry, piece, (idx - direction * step) % size, offset)
    if step < size - 1:
      # Ties this step's transfer to this step's compute, so the scheduler places the matmul between the
      # transfer's start and done instead of hoisting every transfer of the chain to the front.
      carry, arriving = lax.optimization_barrier((carry, arriving))
    parts = [(a, off, d) for a, (_, off, d) in zip(arriving, parts)]
  return carry


def _ag_matmul_local(x, w, *, axis, size, bidirectional):
  """[b, m, k] (this device's rows) @ [k, n] -> [b, size*m, n]: every device's rows times the local columns."""
  b, m, _ = x.shape

  def consume(out, piece, source, offset):
    y = jnp.einsum("bmk,kn->bmn", piece, w, preferred_element_type=F32).astype(x.dtype)
    return lax.dynamic_update_slice_in_dim(out, y, source * m + offset, axis=1)
  return _circulate(x, axis, size, bidirectional, consume, jnp.zeros((b, size * m, w.shape[1]), x.dtype))


def _ag_weight_grad_local(x, dy, *, axis, size, bidirectional):
  """dw = all_gather(x)^T @ dy, without gathering x: [b, m, k] and [b, size*m, n] -> [k, n] (float32)."""
  m = x.shape[1]

  def consume(acc, piece, source, offset):
    rows = lax.dynamic_slice_in_dim(dy, source * m + offset, piece.shape[1], axis=1)
    return acc + jnp.einsum("bmk,bmn->kn", piece, rows, preferred_element_type=F32)
  return _circulate(x, axis, size, bidirectional, consume, jnp.zeros((x.shape[2], dy.shape[2]), F32))


def _rs_weight_grad_local(x, dy, *, axis, size, bidirectional):
  """dw = x^T @ all_gather(dy), without gathering dy: [b, size*m, k] and [b, m, n] -> [k, n] (float32)."""
  m = dy.shape[1]

  def consume(acc, piece, source, offset):
    rows = lax.dynamic_slice_in_dim(x, source * m + offset, piece.shape[1], axis=1)
    return acc + jnp.einsum("bmk,bmn->kn", rows, piece, preferred_element_type=F32)
  return _circulate(dy, axis, size, bidirectional, consume, jnp.zeros((x.shape[2], dy.shape[2]), F32))


def _matmul_rs_local(x, w, *, axis, size, bidirectional):
  """[b, size*m, k] @ [k, n] summed over the ring and scattered by rows -> this device's [b, m, n].

  Partial-sum accumulators travel the ring. An accumulator moving +1 that ends on device c after size-1 hops
  is on device c+1+s at step s, so device d adds its contribution to chunk d-1-s (d+1+s for one moving -1).
  Each step's matmul does not depend on the ppermute that delivers the accumulator it is added to.
  """
  idx = lax.axis_index(axis)
  m = x.shape[1] // size
  outs = []
  for offset, rows, direction in _pieces(m, bidirectional):
    direction = -direction  # accumulators go the other way round from gathered blocks; either works.

    def partial(step, x_in=x, offset=offset, rows=rows, direction=direction):
      chunk = (idx - direction * (1 + step)) % size
      xs = lax.dynamic_slice_in_dim(x_in, chunk * m + offset, rows, axis=1)
      return jnp.einsum("bmk,kn->bmn", xs, w, preferred_element_type=F32)

    acc = partial(0)
    for step in range(1, size):
      # The barrier keeps step s's matmul from running before the accumulator it overlaps with exists, so
      # it lands between that accumulator's transfer start and done.
      acc, x_now = lax.optimization_barrier((acc, x))
      contribution = partial(step, x_now)
      arrived = lax.ppermute(acc, axis, _shift(size, direction))
      # Keeps XLA from fusing the add into the matmul, which would make the matmul wait for the transfer.
      arrived, contribution = lax.optimization_barrier((arrived, contribution))
      acc = arrived + contribution
    outs.append(acc)
  return jnp.concatenate(outs, axis=1).astype(x.dtype)


# --------------------------------------------------------------------------------------------------------
# The global ops, with overlapped gradients.
# --------------------------------------------------------------------------------------------------------

def _batch_spec(batch_axes: Tuple[str, ...]):
  return None if not batch_axes else (batch_axes[0] if len(batch_axes) == 1 else tuple(batch_axes))


KERNELS = ("xla", "pallas")


@functools.lru_cache(maxsize=None)
def _ops(mesh: Mesh, axis: str, batch_axes: Tuple[str, ...], bidirectional: bool, kernel: str = "xla"):
  """Builds (all_gather_matmul, matmul_reduce_scatter) for one mesh, ring axis and batch axes."""
  if kernel not in KERNELS:
    raise ValueError(f"Unknown collective matmul kernel {kernel!r}; choose one of {KERNELS}.")
  size = mesh.shape[axis]
  B = _batch_spec(batch_axes)
  rows_split, cols_split = P(B, axis, None), P(B, None, axis)
  w_cols, w_rows = P(None, axis), P(axis, None)
  kw = dict(axis=axis, size=size, bidirectional=bidirectional)

  def sm(fn, in_specs, out_specs):
    return jax.shard_map(functools.partial(fn, **kw), mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)

  def reduce_over_batch(fn):
    def wrapped(*args, **kwargs):
      out = fn(*args, **kwargs)
      return lax.psum(out, batch_axes) if batch_axes else out
    return wrapped

  ag = sm(_ag_matmul_local, (rows_split, w_cols), cols_split)
  ag_forward = ag if kernel == "xla" else collective_matmul_api.forward_fn(mesh, axis, batch_axes, "pallas")
  rs = sm(_matmul_rs_local, (cols_split, w_rows), rows_split)
  ag_dw = sm(reduce_over_batch(_ag_weight_grad_local), (rows_split, cols_split), w_cols)
  rs_dw = sm(reduce_over_batch(_rs_weight_grad_local), (cols_split, rows_split), w_rows)

  @jax.custom_vjp
  def all_gather_matmul(x, w):
    return ag_forward(x, w)

  def ag_fwd(x, w):
    return ag_forward(x, w), (x, w)

  def ag_bwd(res, dy):
    x, w = res
    # The transpose of an all-gather-matmul is a matmul-reduce-scatter.
    return rs(dy, w.T).astype(x.dtype), ag_dw(x, dy).astype(w.dtype)

  all_gather_matmul.defvjp(ag_fwd, ag_bwd)

  @jax.custom_vjp
  def matmul_reduce_scatter(x, w):
    return rs(x, w)

  def rs_fwd(x, w):
    return rs(x, w), (x, w)

  def rs_bwd(res, dy):
    x, w = res
    # The transpose of a matmul-reduce-scatter is an all-gather-matmul.
    return ag(dy, w.T).astype(x.dtype), rs_dw(x, dy).astype(w.dtype)

  matmul_reduce_scatter.defvjp(rs_fwd, rs_bwd)
  return all_gather_matmul, matmul_reduce_scatter


def all_gather_matmul(x: jax.Array, w: jax.Array, mesh: Mesh, axis: str, batch_axes: Sequence[str] = (),
                      bidirectional: bool = False, kernel: str = "xla") -> jax.Array:
  """all_gather(x, M) @ w with the gather decomposed into overlapped ring steps; see the module docstring."""
  _check(x, w, mesh, axis, gathered=True)
  return _ops(mesh, axis, tuple(batch_axes), bidirectional, kernel)[0](x, w)


def matmul_reduce_scatter(x: jax.Array, w: jax.Array, mesh: Mesh, axis: str, batch_axes: Sequence[str] = (),
                          bidirectional: bool = False) -> jax.Array:
  """psum_scatter(x @ w, M) with the reduction decomposed into overlapped ring steps."""
  _check(x, w, mesh, axis, gathered=False)
  return _ops(mesh, axis, tuple(batch_axes), bidirectional)[1](x, w)


def _check(x, w, mesh, axis, gathered):
  if x.ndim != 3 or w.ndim != 2 or x.shape[2] != w.shape[0]:
    raise ValueError(f"Collective matmul expects x [b, M, K] and w [K, N]; got {x.shape} and {w.shape}.")
  size = mesh.shape[axis]
  split = w.shape[1] if gathered else w.shape[0]
  if x.shape[1] % size or split % size:
    raise ValueError(f"Collective matmul over {axis!r} (size {size}) needs M={x.shape[1]} and the weight's "
                     f"split dimension ({split}) divisible by {size}.")


# --------------------------------------------------------------------------------------------------------
# Fused projections for models: logical layouts in, the current partitioner decides the mesh axes.
# --------------------------------------------------------------------------------------------------------

def _ring(batch: int) -> Tuple[Mesh, str, Tuple[str, ...]]:
  """(mesh, ring axis, batch axes) from the current partitioner, or None when there is no ring, or when
  `batch` does not split over the batch axes (initialisation traces the model with a batch of one)."""
  partitioner = context.current()
  if partitioner is None:
    return None
  ring = {partitioner.mesh_axes_of(name) for name in ("length", "heads", "mlp")}
  if len(ring) != 1 or len(next(iter(ring))) > 1:
    raise UserError(
        "linear_impl='async' needs a rule set that maps the logical axes length, heads and mlp to the same "
        f"single mesh axis (fsdp_tensor does); the current rules map them to {sorted(ring)}.")
  (axes,) = ring
  if not axes or partitioner.mesh.shape[axes[0]] == 1:
    return None
  batch_axes = partitioner.mesh_axes_of("batch")
  if batch % int(np.prod([partitioner.mesh.shape[a] for a in batch_axes])):
    return None
  return partitioner.mesh, axes[0], batch_axes


def _local_columns(weights: Sequence[jax.Array], mesh: Mesh, axis: str) -> jax.Array:
  """Concatenates each device's column blocks of several [K, d1, ...] weights (split on d1) into one
  [K, sum] weight split on its columns: the fused weight as the ring sees it, without moving data."""
  specs = tuple(P(None, axis, *([None] * (w.ndim - 2))) for w in weights)
  fuse = lambda *ws: jnp.concatenate([w.reshape(w.shape[0], -1) for w in ws], axis=1)
  return jax.shard_map(fuse, mesh=mesh, in_specs=specs, out_specs=P(None, axis), check_vma=False)(*weights)


def _local_rows(weights: Sequence[jax.Array], mesh: Mesh, axis: str) -> jax.Array:
  """[d1, ..., N] weights split on d1 -> one [sum, N] weight split on rows, block by block."""
  specs = tuple(P(axis, *([None] * (w.ndim - 1))) for w in weights)
  fuse = lambda *ws: jnp.concatenate([w.reshape(-1, w.shape[-1]) for w in ws], axis=0)
  return jax.shard_map(fuse, mesh=mesh, in_specs=specs, out_specs=P(axis, None), check_vma=False)(*weights)


def fused_all_gather_matmul(x: jax.Array, weights: Sequence[jax.Array], bidirectional: bool = False,
                            kernel: str = "xla") -> List[jax.Array]:
  """[x @ w for w in weights] as one all-gather-matmul.

  x is [batch, length, embed] (length split over the ring between blocks); each weight is [embed, d1, ...]
  with d1 (heads or mlp) split over the ring. Returns [batch, length, d1, ...] per weight, split on d1.
  Without a ring (one device, no tensor axis, or a batch that does not split) these are plain einsums.
  """
  ring = _ring(x.shape[0])
  if ring is None:
    return [jnp.einsum("ble,e...->bl...", x, w) for w in weights]
  mesh, axis, batch_axes = ring
  size = mesh.shape[axis]
  fused = _local_columns(weights, mesh, axis)
  y = all_gather_matmul(x, fused, mesh, axis, batch_axes, bidirectional, kernel)  # [b, l, size * columns]
  local_shapes = [(w.shape[1] // size,) + tuple(w.shape[2:]) for w in weights]
  widths = [int(np.prod(s)) for s in local_shapes]
  B = _batch_spec(batch_axes)

  def split(y_local):
    outs, start = [], 0
    for shape, width in zip(local_shapes, widths):
      outs.append(y_local[..., start:start + width].reshape(y_local.shape[:2] + shape))
      start += width
    return tuple(outs)
  out_specs = tuple(P(B, None, axis, *([None] * (len(s) - 1))) for s in local_shapes)
  return list(jax.shard_map(split, mesh=mesh, in_specs=P(B, None, axis), out_specs=out_specs,
                            check_vma=False)(y))


def fused_matmul_reduce_scatter(inputs: Sequence[jax.Array], weights: Sequence[jax.Array],
                                bidirectional: bool = False) -> jax.Array:
  """sum(x @ w for x, w in zip(inputs, weights)) as one matmul-reduce-scatter.

  Each input is [batch, length, d1, ...] with d1 split over the ring and full length; each weight is
  [d1, ..., embed]. Returns [batch, length, embed] with length split over the ring.
  """
  ring = _ring(inputs[0].shape[0])
  if ring is None:
    return sum(jnp.einsum("bl...,...e->ble", x, w) for x, w in zip(inputs, weights))
  mesh, axis, batch_axes = ring
  B = _batch_spec(batch_axes)
  specs = tuple(P(B, None, axis, *([None] * (x.ndim - 3))) for x in inputs)
  fuse = lambda *xs: jnp.concatenate([x.reshape(x.shape[:2] + (-1,)) for x in xs], axis=-1)
  fused_x = jax.shard_map(fuse, mesh=mesh, in_specs=specs, out_specs=P(B, None, axis), check_vma=False)(*inputs)
  fused_w = _local_rows(weights, mesh, axis)
  return matmul_reduce_scatter(fused_x, fused_w, mesh, axis, batch_axes, bidirectional)
