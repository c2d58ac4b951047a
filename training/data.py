"""Batch-size checks, and feeding a split to the devices: each process loads only the rows its devices hold."""
from typing import Dict, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from shardline.data import order
from shardline.data import pipeline
from shardline.data import sources


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


class SplitFeeder:
  """A split's random-access source, fed to the devices as global batches (data/pipeline.py).

  Attributes:
    source: the split (`len(source)` examples, `source[i]` a dict of numpy arrays).
    settings: workers, prefetch and transforms (stream.* in gin).
    num_examples: the split's size.
  """

  def __init__(self, source, settings: sources.StreamSettings):
    self.source, self.settings = source, settings
    self.num_examples = len(source)

  def train_stream(self, sampler: order.StepSampler, start_step: int, steps: int,
                   shardings: Dict[str, NamedSharding]) -> pipeline.DevicePrefetcher:
    """Global batches of training steps start_step..steps-1, prefetched (close it when done). A run with no step
    left (start_step == steps: a finished run started again) still gets the batch of start_step, which the step
    is compiled against."""
    shape = (sampler.global_batch,)
    rows = _rows(shardings, shape)
    loader = pipeline.RowLoader(self.source, shardings, self.settings.train_transform, sampler.seed)
    return pipeline.DevicePrefetcher(pipeline.TrainBatches(loader, sampler, rows), start_step,
                                     max(steps, start_step + 1), shardings,
                                     sampler.global_batch, self.settings.workers, self.settings.prefetch,
                                     _value_ranges(self.settings.train_transform))

  def eval_batches(self, batch_size: int, shardings: Dict[str, NamedSharding]) -> Iterator[Dict[str, jax.Array]]:
    """Every example once, in padded global batches with a 'weight' feature (0 for padding)."""
    rows = _rows(shardings, (batch_size,))
    features = [name for name in shardings if name != "weight"]
    loader = pipeline.RowLoader(self.source, features, self.settings.eval_transform, seed=0, strict=False)
    batches = -(-self.num_examples // batch_size)
    with pipeline.DevicePrefetcher(pipeline.EvalBatches(loader, self.num_examples, batch_size, rows), 0, batches,
                                   shardings, batch_size, self.settings.workers, self.settings.prefetch,
                                   _value_ranges(self.settings.eval_transform)) as stream:
      yield from stream

  def feature_names(self):
    """The names of the features each example has."""
    features = getattr(self.source, "features", None)
    return tuple(features) if features is not None else tuple(self.source[0])

  def labels(self, name: str = "label") -> np.ndarray:
    """One feature of every example, in order, without decoding the rest where the source allows."""
    if hasattr(self.source, "column"):
      return self.source.column(name, range(self.num_examples))
    return np.stack([self.source[i][name] for i in range(self.num_examples)])


def _value_ranges(transform) -> Dict[str, tuple]:
  """The features a transform leaves as uint8 for the device to map to float (data/augment.py)."""
  return transform.device_value_ranges() if hasattr(transform, "device_value_ranges") else {}


def _rows(shardings: Dict[str, NamedSharding], shape) -> np.ndarray:
  """This process's rows of a batch; every feature's batch dimension must be split the same way."""
  rows = {name: tuple(pipeline.local_rows(sharding, shape)) for name, sharding in shardings.items()}
  if len(set(rows.values())) != 1:
    raise ValueError(f"The batch features are split over processes differently: {rows}")
  return np.array(next(iter(rows.values())), np.int64)


def open_split(task: str, split: str, settings: sources.StreamSettings) -> SplitFeeder:
  """The feeder of a task's split (prepared on first use where allowed)."""
  settings.check()
  return SplitFeeder(sources.open_source(task, split, settings), settings)
