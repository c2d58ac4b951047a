"""Real gridded precipitation data from Zarr (v3) arrays through tensorstore, as a seqio task named in gin.

Expected layout: a directory holding one Zarr v3 array per variable, all with the same shape
[time, y, x] and dimension names ('time', 'y', 'x'):
  precipitation   radar precipitation rate in mm/h (e.g. MRMS), at a fixed time step;
  u_wind, v_wind, u_tendency, v_tendency, humidity, instability
                  the weather-model state on the same grid and times (e.g. regridded HRRR fields; use zeros for
                  any you do not have, and the model will learn to ignore them).
Examples are forecast times t (every `time_stride` frames, leaving room for the history and the longest lead)
times spatial windows of side `context` (every `spatial_stride` pixels). Splits follow time: the last
`test_fraction` of forecast times is 'test', so no test frame is seen in training.
"""
import hashlib
from typing import Dict, Tuple

import gin
import numpy as np
import seqio
import tensorflow as tf
import tensorstore as ts

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.tasks.precipitation import features, simulator

VARIABLES = ("precipitation",) + simulator.STATE_CHANNELS
DIMENSIONS = ("time", "y", "x")


def open_variables(path: str) -> Dict[str, np.ndarray]:
  """Every expected variable of the store at `path`, read into memory; UserErrors name what is wrong."""
  path = paths.check_url(path, "tasks.precipitation_zarr.path")
  if not paths.exists(path):
    raise UserError(f"Precipitation store {path!r} does not exist. Point --gin.tasks.precipitation_zarr.path "
                    "at a directory (or gs:// or s3:// prefix) of Zarr v3 arrays (see "
                    "shardline/tasks/precipitation/zarr_source.py).")
  arrays = {}
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
    arrays[name] = np.asarray(store.read().result(), np.float32)
  shapes = {name: a.shape for name, a in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise UserError(f"Variables in {path!r} differ in shape: {shapes}. All must be [time, y, x] on one grid.")
  return arrays


def cut_examples(arrays: Dict[str, np.ndarray], context: int, target: int, input_frames: int,
                 lead_times: Tuple[int, ...], time_stride: int, spatial_stride: int
                 ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """All examples of the store, and the forecast time of each (for splitting by time)."""
  rain = arrays["precipitation"]
  steps, height, width = rain.shape
  times = list(range(input_frames - 1, steps - max(lead_times), time_stride))
  corners = [(y, x) for y in range(0, height - context + 1, spatial_stride)
             for x in range(0, width - context + 1, spatial_stride)]
  if not times or not corners:
    raise UserError(f"The store's [time, y, x] = {rain.shape} is too small for {input_frames} input frames, "
                    f"leads up to {max(lead_times)} and a {context}x{context} context.")
  margin = (context - target) // 2
  state = np.stack([arrays[name] for name in simulator.STATE_CHANNELS], axis=1)  # [time, 6, y, x]
  out = {name: [] for name in features.NAMES}
  forecast_times = []
  for t in times:
    for y, x in corners:
      window = (slice(y, y + context), slice(x, x + context))
      inner = (slice(y + margin, y + margin + target), slice(x + margin, x + margin + target))
      out["radar"].append(rain[(slice(t - input_frames + 1, t + 1),) + window])
      out["state"].append(state[(t, slice(None)) + window])
      out["target"].append(np.stack([rain[(t + lead,) + inner] for lead in lead_times]))
      forecast_times.append(t)
  return {k: np.stack(v).astype(np.float32) for k, v in out.items()}, np.array(forecast_times)


@gin.configurable(module="tasks")
def precipitation_zarr(path: str = gin.REQUIRED, context: int = 64, target: int = 32, input_frames: int = 4,
                       lead_times: Tuple[int, ...] = (1, 3, 6, 12), time_stride: int = 1,
                       spatial_stride: int = 32, test_fraction: float = 0.2) -> str:
  """Registers (once) and returns the name of a seqio task over a Zarr precipitation store."""
  arrays = open_variables(path)
  examples, times = cut_examples(arrays, context, target, input_frames, tuple(lead_times), time_stride,
                                 spatial_stride)
  cutoff = np.quantile(np.unique(times), 1 - test_fraction)
  splits = {"train": times < cutoff, "test": times >= cutoff}
  if not splits["train"].any() or not splits["test"].any():
    raise UserError(f"{path!r} holds too few forecast times to split {1 - test_fraction:.0%}/{test_fraction:.0%}.")
  name = "precipitation_zarr_" + hashlib.sha1(repr((paths.display(path), context, target, input_frames,
                                                     tuple(lead_times), time_stride, spatial_stride,
                                                     test_fraction)).encode()).hexdigest()[:10]
  if name not in seqio.TaskRegistry.names():
    def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
      del shuffle_files
      return tf.data.Dataset.from_tensor_slices({k: v[splits[split]] for k, v in examples.items()})
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
        dataset_fn, splits=("train", "test"), num_input_examples={k: int(v.sum()) for k, v in splits.items()}),
                           preprocessors=[], output_features=features.output_features())
  return name
