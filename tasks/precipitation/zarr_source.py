"""Real gridded precipitation data from Zarr (v3) arrays, read example by example through tensorstore.

Expected layout: a directory holding one Zarr v3 array per variable, all with the same shape
[time, y, x] and dimension names ('time', 'y', 'x'):
  precipitation   radar precipitation rate in mm/h (e.g. MRMS), at a fixed time step;
  u_wind, v_wind, u_tendency, v_tendency, humidity, instability
                  the weather-model state on the same grid and times (e.g. regridded HRRR fields; use zeros for
                  any you do not have, and the model will learn to ignore them).
Examples are forecast times t (every `time_stride` frames, leaving room for the history and the longest lead)
times spatial windows of side `context` (every `spatial_stride` pixels). Splits follow time: the last
`test_fraction` of forecast times is 'test', so no test frame is seen in training.

The store is already random access, so it is a direct source of the input layer (tasks/splits.py): no prepare
step and no copy. Each example reads only its windows (tensorstore caches nothing between examples), so memory
does not grow with the archive, and a batch's reads are issued together.
"""
import dataclasses
import hashlib
from typing import Dict, List, Sequence, Tuple

import gin
import numpy as np
import tensorstore as ts

from shardline.tasks.tensorflow_setup import seqio, tf
from shardline.core import paths
from shardline.core.errors import UserError
from shardline.data import source
from shardline.tasks import splits
from shardline.tasks.precipitation import features, simulator

VARIABLES = ("precipitation",) + simulator.STATE_CHANNELS
DIMENSIONS = ("time", "y", "x")
SPLITS = ("train", "test")


def open_stores(path: str) -> Dict[str, ts.TensorStore]:
  """Every expected variable of the store at `path`, opened (metadata only); UserErrors name what is wrong."""
  path = paths.check_url(path, "tasks.precipitation_zarr.path")
  if not paths.exists(path):
    raise UserError(f"Precipitation store {path!r} does not exist. Point --gin.tasks.precipitation_zarr.path "
                    "at a directory (or gs:// or s3:// prefix) of Zarr v3 arrays (see "
                    "shardline/tasks/precipitation/zarr_source.py).")
  stores = {}
  for name in VARIABLES:
    try:
      store = ts.open({"driver": "zarr3", "kvstore": paths.tensorstore_kvstore(paths.join(path, name))},
                      open=True).result()
    except Exception as e:  # tensorstore raises ValueError subclasses with long messages
      raise UserError(f"Precipitation store {path!r} has no readable Zarr v3 array {name!r} "
                      f"({str(e).splitlines()[0][:200]}). Expected variables: {', '.join(VARIABLES)}.") from e
    names = tuple(store.domain.labels)
    if names != DIMENSIONS:
      raise UserError(f"Variable {name!r} in {path!r} has dimensions {names}; expected {DIMENSIONS}.")
    stores[name] = store
  shapes = {name: tuple(s.shape) for name, s in stores.items()}
  if len(set(shapes.values())) != 1:
    raise UserError(f"Variables in {path!r} differ in shape: {shapes}. All must be [time, y, x] on one grid.")
  return stores


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How examples are cut from the store (see precipitation_zarr for the meaning of each field)."""
  context: int
  target: int
  input_frames: int
  lead_times: Tuple[int, ...]
  time_stride: int
  spatial_stride: int
  test_fraction: float


def forecast_times_and_corners(shape: Sequence[int], g: Geometry) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """The forecast times of each split (the last test_fraction of them is 'test') and the windows' (y, x)
  corners [n, 2], for a store of shape [time, y, x]."""
  steps, height, width = shape
  times = np.arange(g.input_frames - 1, steps - max(g.lead_times), g.time_stride)
  corners = np.array([(y, x) for y in range(0, height - g.context + 1, g.spatial_stride)
                      for x in range(0, width - g.context + 1, g.spatial_stride)], np.int64).reshape(-1, 2)
  if not len(times) or not len(corners):
    raise UserError(f"The store's [time, y, x] = {tuple(shape)} is too small for {g.input_frames} input frames, "
                    f"leads up to {max(g.lead_times)} and a {g.context}x{g.context} context.")
  cutoff = np.quantile(times, 1 - g.test_fraction)
  split_times = {"train": times[times < cutoff], "test": times[times >= cutoff]}
  if not all(len(t) for t in split_times.values()):
    raise UserError(f"The store holds too few forecast times ({len(times)}) to split "
                    f"{1 - g.test_fraction:.0%}/{g.test_fraction:.0%}.")
  return split_times, corners


class ZarrWindows(source.Source):
  """Random access to one split: example i is forecast time times[i // len(corners)] at corner
  corners[i % len(corners)], as {'radar': [input_frames, context, context], 'state': [6, context, context],
  'target': [len(lead_times), target, target]}, float32. Picklable (the stores reopen in a loader worker)."""

  def __init__(self, path: str, geometry: Geometry, split: str):
    if split not in SPLITS:
      raise UserError(f"The precipitation store has no split {split!r}; it has {', '.join(SPLITS)}.")
    self.path, self.geometry, self.split = path, geometry, split
    self._stores = open_stores(path)
    split_times, self.corners = forecast_times_and_corners(self._stores["precipitation"].shape, geometry)
    self.times = split_times[split]

  def __getstate__(self):
    return {**self.__dict__, "_stores": None}

  def __len__(self) -> int:
    return len(self.times) * len(self.corners)

  def _reads(self, index: int) -> Dict[str, List[ts.Future]]:
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of {len(self)}")
    if self._stores is None:
      self._stores = open_stores(self.path)
    g = self.geometry
    t = int(self.times[index // len(self.corners)])
    y, x = (int(v) for v in self.corners[index % len(self.corners)])
    margin = (g.context - g.target) // 2
    window = (slice(y, y + g.context), slice(x, x + g.context))
    inner = (slice(y + margin, y + margin + g.target), slice(x + margin, x + margin + g.target))
    rain = self._stores["precipitation"]
    return {"radar": [rain[(slice(t - g.input_frames + 1, t + 1),) + window].read()],
            "state": [self._stores[name][(t,) + window].read() for name in simulator.STATE_CHANNELS],
            "target": [rain[(np.asarray(g.lead_times) + t,) + inner].read()]}

  @staticmethod
  def _gather(reads: Dict[str, List[ts.Future]]) -> Dict[str, np.ndarray]:
    return {"radar": np.asarray(reads["radar"][0].result(), np.float32),
            "state": np.stack([f.result() for f in reads["state"]]).astype(np.float32),
            "target": np.asarray(reads["target"][0].result(), np.float32)}

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    return self._gather(self._reads(int(index)))

  def examples(self, indices: Sequence[int]) -> List[Dict[str, np.ndarray]]:
    """Several examples, their reads issued together (one round trip's latency on a bucket, not one each)."""
    reads = [self._reads(int(i)) for i in indices]
    return [self._gather(r) for r in reads]

  def describe(self) -> str:
    return (f"{len(self):,} windows ({len(self.times)} forecast times x {len(self.corners)} corners) of the "
            f"Zarr store {paths.display(self.path)} {self.split!r}, read directly")


@gin.configurable(module="tasks")
def precipitation_zarr(path: str = gin.REQUIRED, context: int = 64, target: int = 32, input_frames: int = 4,
                       lead_times: Tuple[int, ...] = (1, 3, 6, 12), time_stride: int = 1,
                       spatial_stride: int = 32, test_fraction: float = 0.2) -> str:
  """Registers (once) and returns the name of a task over a Zarr precipitation store, read directly.

  The task is also a seqio task (streaming the same examples), so seqio tools and `shardline data prepare` can
  use it; training and evaluation read the store itself.
  """
  geometry = Geometry(context, target, input_frames, tuple(lead_times), time_stride, spatial_stride,
                      test_fraction)
  stores = open_stores(path)
  split_times, corners = forecast_times_and_corners(stores["precipitation"].shape, geometry)
  name = "precipitation_zarr_" + hashlib.sha1(repr((paths.display(path),) + dataclasses.astuple(geometry))
                                              .encode()).hexdigest()[:10]
  if name not in seqio.TaskRegistry.names():
    def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
      del shuffle_files
      source = ZarrWindows(path, geometry, split)
      return tf.data.Dataset.from_generator(
          lambda: (source[i] for i in range(len(source))),
          output_signature={k: tf.TensorSpec((None, None, None), tf.float32) for k in features.NAMES})
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
        dataset_fn, splits=SPLITS, num_input_examples={k: len(v) * len(corners) for k, v in split_times.items()}),
                           preprocessors=[], output_features=features.output_features())
  splits.register_direct(name, lambda split: ZarrWindows(path, geometry, split))
  return name
