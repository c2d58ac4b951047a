"""Gradient accumulation: one optimizer update from k microbatches of the global batch.

Microbatch j holds rows j, j+k, j+2k, ... of the global batch (strided, not contiguous). A device that holds
rows [d*b, (d+1)*b) of the batch therefore holds b/k rows of every microbatch, so splitting moves no data between
devices; a contiguous slice would put each microbatch on a fraction of the devices and move the rest there
(T5X issue 1253 is the OOM that causes). The microbatches run one after another in a `lax.scan`, so only one
microbatch's activations are alive at a time.

Gradients are summed in a float32 accumulator, sharded like the parameters, and divided by k: every microbatch
has the same number of examples, each with weight one, so that is the gradient of the mean loss over the
global batch. Metrics stay (sum, weight) pairs and are summed over microbatches, so their averages are
normalised by the total weight. The loss is exactly the full batch's only for models whose loss is a mean of
per-example terms; a contrastive loss (LIMoE) sees k smaller sets of negatives.
"""
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from shardline.partitioning.context import constrain, scan_unroll

ACCUMULATOR_DTYPE = jnp.float32

# (params, batch, rng) -> ((loss, metrics), grads)
GradFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], Tuple[Tuple[jax.Array, Dict], Any]]


def split_strided(batch: Mapping[str, jax.Array], k: int,
                  batch_axes: Mapping[str, Sequence[Any]]) -> Dict[str, jax.Array]:
  """[B, ...] features -> [k, B/k, ...], microbatch j = rows j, j+k, ...; sharded as the batch was (no moves)."""
  out = {}
  for name, x in batch.items():
    rows = x.reshape((x.shape[0] // k, k) + x.shape[1:])  # [B/k, k, ...]: row i*k + j -> (i, j)
    micro = jnp.swapaxes(rows, 0, 1)  # [k, B/k, ...]
    out[name] = constrain(micro, (None, *batch_axes[name])) if name in batch_axes else micro
  return out


def accumulate_gradients(grad_fn: GradFn, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array, k: int,
                         batch_axes: Mapping[str, Sequence[Any]]) -> Tuple[Tuple[jax.Array, Dict], Any]:
  """The mean loss, the summed (sum, weight) metrics and the mean gradient over k strided microbatches.

  Returns the same structure as `grad_fn` on the whole batch. Microbatch j's RNG is `fold_in(rng, j)`.
  """
  micro = split_strided(batch, k, batch_axes)
  first = jax.tree.map(lambda x: x[0], micro)
  (loss_shape, metrics_shape), grads_shape = jax.eval_shape(grad_fn, params, first, rng)
  zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, ACCUMULATOR_DTYPE), tree)
  init = (zeros(loss_shape), zeros(metrics_shape), zeros(grads_shape))

  def body(carry, inputs):
    index, microbatch = inputs
    (loss, metrics), grads = grad_fn(params, microbatch, jax.random.fold_in(rng, index))
    add = lambda total, x: total + x.astype(ACCUMULATOR_DTYPE)
    return jax.tree.map(add, carry, (loss, metrics, grads)), None

  (loss_sum, metrics, grad_sum), _ = jax.lax.scan(body, init, (jnp.arange(k), micro), unroll=scan_unroll(k))
  grads = jax.tree.map(lambda g, s: (g / k).astype(s.dtype), grad_sum, grads_shape)
  return ((loss_sum / k).astype(loss_shape.dtype), metrics), grads
