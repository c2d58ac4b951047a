"""A split fed to the devices: each process loads only the rows of the global batch that its devices hold.

Which rows a process holds is a property of the batch (leading) dimension alone. A feature's other dimensions
may be split over the process's devices in any way (MetNet-2's images over height and width under the `spatial`
rules): every process loads whole examples, and `jax.make_array_from_process_local_data` takes each device's
slice of the dimensions that are not the batch's.
"""
from typing import Dict, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from shardline.data import order
from shardline.data import pipeline
from shardline.data.settings import StreamSettings
from shardline.data.source import Source, Transform


def batch_rows(sharding: NamedSharding, global_batch: int) -> np.ndarray:
  """The sorted global row indices of a batch that this process's devices hold under `sharding` (of any rank)."""
  spec = tuple(sharding.spec)
  batch_only = NamedSharding(sharding.mesh, PartitionSpec(spec[0] if spec else None))
  rows = set()
  for index in batch_only.addressable_devices_indices_map((global_batch,)).values():
    rows.update(range(*index[0].indices(global_batch)))
  return np.array(sorted(rows), np.int64)


def process_rows(shardings: Mapping[str, NamedSharding], global_batch: int) -> np.ndarray:
  """This process's rows of a global batch; every feature's batch dimension must be split the same way."""
  rows = {name: tuple(batch_rows(sharding, global_batch)) for name, sharding in shardings.items()}
  if len(set(rows.values())) != 1:
    raise ValueError(f"The batch features are split over processes differently: {rows}")
  return np.array(next(iter(rows.values())), np.int64)


def _value_ranges(transform: Optional[Transform]) -> Dict[str, Sequence[float]]:
  return dict(transform.device_value_ranges()) if transform is not None else {}


class SplitFeeder:
  """A split's source, fed to the devices as global batches (pipeline.py).

  Attributes:
    source: the split.
    settings: workers, prefetch and transforms (stream.* in gin).
    num_examples: the split's size.
  """

  def __init__(self, source: Source, settings: StreamSettings):
    self.source, self.settings = source, settings
    self.num_examples = len(source)

  def describe(self) -> str:
    """The run's `Data:` log line."""
    transform = self.settings.train_transform.describe() if self.settings.train_transform is not None else None
    return (f"Data: {self.source.describe()} | {self.settings.workers} loader worker(s), {self.settings.prefetch} "
            "batch(es) prefetched to the devices" + (f" | {transform}" if transform else ""))

  def train_stream(self, sampler: order.StepSampler, start_step: int, steps: int,
                   shardings: Dict[str, NamedSharding]) -> pipeline.DevicePrefetcher:
    """Global batches of training steps start_step..steps-1, prefetched (close it when done). A run with no step
    left (start_step == steps: a finished run started again) still gets the batch of start_step, which the step
    is compiled against."""
    rows = process_rows(shardings, sampler.global_batch)
    loader = pipeline.RowLoader(self.source, shardings, self.settings.train_transform, sampler.seed)
    return pipeline.DevicePrefetcher(pipeline.TrainBatches(loader, sampler, rows), start_step,
                                     max(steps, start_step + 1), shardings, sampler.global_batch,
                                     self.settings.workers, self.settings.prefetch,
                                     _value_ranges(self.settings.train_transform))

  def eval_batches(self, batch_size: int, shardings: Dict[str, NamedSharding]) -> Iterator[Dict[str, jax.Array]]:
    """Every example once, in padded global batches with a 'weight' feature (0 for padding)."""
    rows = process_rows(shardings, batch_size)
    features = [name for name in shardings if name != "weight"]
    loader = pipeline.RowLoader(self.source, features, self.settings.eval_transform, seed=0, strict=False)
    batches = -(-self.num_examples // batch_size)
    with pipeline.DevicePrefetcher(pipeline.EvalBatches(loader, self.num_examples, batch_size, rows), 0, batches,
                                   shardings, batch_size, self.settings.workers, self.settings.prefetch,
                                   _value_ranges(self.settings.eval_transform)) as stream:
      yield from stream

  def feature_names(self):
    """The names of the features each example has."""
    return self.source.feature_names()

  def labels(self, name: str = "label", indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """One feature of the examples at `indices` (all of them by default), in order, without decoding the rest
    where the source allows."""
    return self.source.column(name, range(self.num_examples) if indices is None else indices)
