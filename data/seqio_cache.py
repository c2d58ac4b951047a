"""A seqio cache written as ArrayRecord, read in place: the output of seqio's cache_tasks_main pipeline with
output_format='arrayrecord' (seqio >= 0.0.20; a Beam or Dataflow job), so web-scale data prepared there trains
here without a `shardline data prepare`.

  <cache dir>/<task name, ':' as '/'>/COMPLETED                           written last, when the job succeeded
  <cache dir>/<task name>/info.<split>.json                               feature dtypes and shapes, shard count
  <cache dir>/<task name>/<split>.array_record-00000-of-00016 ...          one serialized tf.train.Example each

Records are parsed with TFDS's TensorFlow-free copy of the tf.train.Example proto, so the loader's workers do not
import TensorFlow. Dense features are supported (a scalar, or a leading variable length with fixed trailing
dimensions); seqio stores ragged features with extra row-length keys, which are refused at open.

Random access needs the cache written with preserve_random_access=True (ArrayRecord group size 1): with seqio's
default group size (the shard count), every read decompresses a group of records.
"""
import glob
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from shardline.core.errors import UserError
from shardline.data import shards, source

COMPLETED = "COMPLETED"
_DTYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "float32": np.float32, "float64": np.float64,
           "uint8": np.uint8, "int8": np.int8, "int16": np.int16, "uint16": np.uint16, "uint32": np.uint32,
           "float16": np.float16, "string": object}
_PROVENANCE = "provenance/"


def task_dir(cache_dir: str, task_name: str) -> str:
  """Where seqio caches `task_name` under cache_dir (a ':' in the name is a folder level)."""
  return os.path.join(cache_dir, *task_name.split(":"))


def shard_paths(directory: str, split: str) -> List[str]:
  return sorted(glob.glob(os.path.join(directory, f"{split}.array_record-*-of-*")))


def find(cache_dirs: Sequence[str], task_name: str, split: str) -> Optional[str]:
  """The first of cache_dirs holding an ArrayRecord seqio cache of the task's split, or None."""
  for cache_dir in cache_dirs:
    directory = task_dir(cache_dir, task_name)
    if os.path.exists(os.path.join(directory, f"info.{split}.json")) and shard_paths(directory, split):
      return directory
  return None


class SeqioCacheSource(source.Source):
  """Random access to one split of a seqio ArrayRecord cache: `source[i]` is example i as numpy arrays in the
  dtypes and shapes of info.<split>.json. Picklable: each loader worker opens its own readers.

  Args:
    directory: the task's cache folder.
    split: the split.
    expected: the task's output features {name: numpy dtype}; each must be in the cache, in that dtype.
  """

  def __init__(self, directory: str, split: str, expected: Optional[Mapping[str, Any]] = None):
    self.directory, self.split = directory, split
    self.info_path = os.path.join(directory, f"info.{split}.json")
    if not os.path.exists(os.path.join(directory, COMPLETED)):
      raise UserError(f"The seqio cache {directory} has no {COMPLETED} file: the job that writes it has not "
                      "finished, or failed. Wait for it or run it again; nothing is read from a partial cache.")
    try:
      with open(self.info_path) as f:
        info = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"The seqio cache info {self.info_path} cannot be read ({e}). Re-run the caching job.") from e
    self.features = self._dense_features(info)
    self.paths = shard_paths(directory, split)
    if len(self.paths) != info.get("num_shards", len(self.paths)):
      raise UserError(f"The seqio cache {directory} holds {len(self.paths)} {split}.array_record shard(s), but "
                      f"{self.info_path} records {info['num_shards']}: shards are missing. Re-run the caching job "
                      "or restore them.")
    if expected is not None:
      self._check_expected(expected)
    self._records = shards.ShardedRecords(self.paths, None, "the seqio cache shard",
                                          "The shard is damaged; re-run the caching job.")

  def _dense_features(self, info: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    features = {}
    for name, spec in info["features"].items():
      if name.startswith(_PROVENANCE):
        continue
      shape, dtype = list(spec["shape"]), spec["dtype"]
      if dtype not in _DTYPES or any(d is None for d in shape[1:]):
        raise UserError(f"Feature {name!r} of the seqio cache {self.info_path} is {dtype} with shape {shape}: "
                        "shardline reads dense features (a scalar, or [None, fixed, ...]) of numeric or string "
                        "dtypes. Pad it to a fixed size in a preprocessor before caching, or let `shardline data "
                        "prepare` run the task instead.")
      features[name] = {"shape": shape, "dtype": dtype}
    return features

  def _check_expected(self, expected: Mapping[str, Any]) -> None:
    problems = []
    for name, dtype in expected.items():
      if name not in self.features:
        problems.append(f"{name!r} is missing")
      elif np.dtype(_DTYPES[self.features[name]["dtype"]]) != np.dtype(dtype):
        problems.append(f"{name!r} is {self.features[name]['dtype']}, the task gives {np.dtype(dtype).name}")
    if problems:
      raise UserError(f"The seqio cache {self.directory} does not hold the task's features: {'; '.join(problems)}"
                      f" (it has {', '.join(self.features)}). It was made by another version of the task; re-run "
                      "the caching job, or remove the folder from stream.seqio_cache_dirs.")

  def __len__(self) -> int:
    return len(self._records)

  def feature_names(self) -> Tuple[str, ...]:
    return tuple(self.features)

  def _parse(self, index: int, record: bytes) -> Dict[str, np.ndarray]:
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top  (no TensorFlow)
    try:
      stored = tf_example_pb2.Example.FromString(record).features.feature
    except Exception as e:  # protobuf's DecodeError
      raise UserError(f"The {self._records.where(index)} is not a tf.train.Example ({e}). The shard is damaged; "
                      "re-run the caching job.") from e
    example = {}
    for name, spec in self.features.items():
      if name not in stored:
        raise UserError(f"The {self._records.where(index)} has no feature {name!r}, which {self.info_path} lists.")
      feature = stored[name]
      kind = feature.WhichOneof("kind")
      values = getattr(feature, kind).value if kind else []
      dtype = _DTYPES[spec["dtype"]]
      shape = spec["shape"]
      if dtype is object and not shape:
        example[name] = bytes(values[0])  # e.g. an encoded image, as the image transforms take it
        continue
      array = np.array(list(values), dtype=dtype) if dtype is object else np.asarray(values, dtype)
      example[name] = array.reshape([-1] + shape[1:]) if shape else array.reshape(())
    return example

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    return self._parse(int(index), self._records.read(int(index)))

  def examples(self, indices: Sequence[int]) -> List[Dict[str, np.ndarray]]:
    """Several examples, read shard by shard in one call each."""
    return [self._parse(int(i), record) for i, record in zip(indices, self._records.read_many(indices))]

  def group_size(self) -> int:
    """Records per compressed chunk in the first shard (1 when written with preserve_random_access)."""
    options = dict(option.split(":", 1) for option in self._records.reader(0).writer_options_string().split(",")
                   if ":" in option)
    return int(options.get("group_size", 1))

  def describe(self) -> str:
    group = self.group_size()
    slow = (f"; written with group size {group}, so every read decompresses {group} records: cache with "
            "preserve_random_access=True for fast random access" if group > 1 else "")
    return (f"{len(self):,} examples of the seqio ArrayRecord cache {self.directory} {self.split!r} "
            f"({len(self.paths)} shard(s)), read directly{slow}")
