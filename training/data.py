"""Global batches from host arrays: each process contributes only the rows its devices hold."""
from typing import Dict, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from shardline.tasks import loader


def check_batch_divisible(global_batch: int, partitioner: Partitioner, what: str = "train.batch_size") -> None:
  """Stops when the global batch does not split evenly over the data-parallel mesh axes."""
  batch_axes = partitioner.mesh_axes_of("batch")
  ways = mesh_lib.data_parallel_size(partitioner.mesh, batch_axes)
  if global_batch <= 0 or global_batch % ways:
    raise UserError(
        f"{what} = {global_batch} is not divisible by the data-parallel size {ways} (the batch is split over "
        f"mesh axes {' x '.join(batch_axes) or '(none)'} of the mesh {mesh_lib.describe(partitioner.mesh)}). "
        f"Use a multiple of {ways}, e.g. {max(ways, (global_batch // ways) * ways) or ways}.")


def check_microbatches(global_batch: int, microbatches: int, partitioner: Partitioner) -> None:
  """Stops unless `microbatches` divides every device's share of the global batch (strided microbatches keep
  each device's rows on that device, so each microbatch needs the same number of rows on every device)."""
  ways = mesh_lib.data_parallel_size(partitioner.mesh, partitioner.mesh_axes_of("batch"))
  per_device = global_batch // ways
  if microbatches < 1 or per_device % microbatches:
    divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
    raise UserError(
        f"train.microbatches = {microbatches} does not divide the per-device batch: the global batch "
        f"{global_batch} is split {ways} ways over the mesh {mesh_lib.describe(partitioner.mesh)}, so each device "
        f"holds {per_device} examples. Choose microbatches from {divisors}, or change train.batch_size.")


def _local_rows(sharding: NamedSharding, global_shape) -> np.ndarray:
  """The (sorted) global row indices that this process's devices hold."""
  rows = set()
  for index in sharding.addressable_devices_indices_map(tuple(global_shape)).values():
    rows.update(range(*index[0].indices(global_shape[0])))
  return np.array(sorted(rows), np.int64)


class BatchFeeder:
  """Builds global, sharded batches from a materialised split.

  Attributes:
    examples: the split, as host arrays.
    shardings: feature name -> NamedSharding of the global batch.
  """

  def __init__(self, examples: loader.Examples, shardings: Dict[str, NamedSharding]):
    self.examples = examples
    self.shardings = shardings
    self.num_examples = len(next(iter(examples.values())))

  def _globalize(self, indices: np.ndarray, extra: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
    """Reads only this process's rows of the examples at `indices` and assembles the global arrays."""
    out = {}
    for name, sharding in self.shardings.items():
      source = extra.get(name, self.examples.get(name))
      if source is None:
        continue
      shape = (len(indices),) + source.shape[1:]
      rows = _local_rows(sharding, shape)
      local = source[rows] if name in extra else source[indices[rows]]
      out[name] = jax.make_array_from_process_local_data(sharding, local, shape)
    return out

  def train_batch(self, sampler: loader.StepSampler, step: int) -> Dict[str, jax.Array]:
    """The global batch of training step `step` (a pure function of the step)."""
    return self._globalize(sampler.indices(step), {})

  def eval_batches(self, batch_size: int) -> Iterator[Dict[str, jax.Array]]:
    """Every example once, in padded batches with a 'weight' feature (0 for padding)."""
    for start in range(0, self.num_examples, batch_size):
      positions = np.arange(start, start + batch_size)
      weight = (positions < self.num_examples).astype(np.float32)
      yield self._globalize(np.minimum(positions, self.num_examples - 1), {"weight": weight})
