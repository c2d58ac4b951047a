"""Which random-access source a task's split is read from, and the stream settings bound in gin.

A task registered with a direct source (`register_direct`: TFDS datasets built as ArrayRecord, the Zarr radar
archive, the Atari episodes) is read as it is. A task cached by seqio's own pipeline as ArrayRecord under one of
stream.seqio_cache_dirs is read in place (data/seqio_cache.py). Every other seqio task is read from its prepared
split under stream.cache_dir, which is prepared on first use unless stream.prepare_on_first_use is False (then
`shardline data prepare` must have run).
"""
import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Sequence

import gin

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.data import pipeline, seqio_cache

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "shardline", "prepared")
_DIRECT: Dict[str, Callable[[str], Any]] = {}


def register_direct(task_name: str, open_split: Callable[[str], Any]) -> None:
  """Reads `task_name` through open_split(split) -> source instead of a prepared cache."""
  _DIRECT[task_name] = open_split


@gin.configurable("stream", module="data")
@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """How examples are read and fed.

  Attributes:
    cache_dir: root of prepared splits (<cache_dir>/<task>/<split>); a local folder on every host.
    prepare_on_first_use: prepare a missing split when a run needs it (the bundled tasks rely on this); on a pod,
      run `shardline data prepare` once per host instead.
    workers: grain worker processes that load, decode and augment (0: a thread of the training process).
    prefetch: batches built and placed on the devices ahead of the step.
    train_transform: per-example transform of training examples (e.g. @data.train_images()), or None.
    eval_transform: per-example transform of evaluation examples (e.g. @data.eval_images()), or None.
    seqio_cache_dirs: local folders searched, in order, for a seqio ArrayRecord cache of the task
      (<dir>/<task name>/<split>.array_record-*), which is then read in place instead of a prepared split.
  """
  cache_dir: str = DEFAULT_CACHE_DIR
  prepare_on_first_use: bool = True
  workers: int = 0
  prefetch: int = 2
  train_transform: Optional[pipeline.Transform] = None
  eval_transform: Optional[pipeline.Transform] = None
  seqio_cache_dirs: Sequence[str] = ()

  def check(self) -> None:
    if self.workers < 0:
      raise UserError(f"stream.workers = {self.workers}; use 0 (load in the training process) or more.")
    if self.prefetch < 1:
      raise UserError(f"stream.prefetch = {self.prefetch}; at least 1 batch must be built ahead of the step.")
    for directory in self.seqio_cache_dirs:
      paths.check_local(directory, "stream.seqio_cache_dirs", "ArrayRecord shards are read with local file I/O. "
                        "Mount the bucket (e.g. with gcsfuse, as MaxText reads ArrayRecord) and give the mount "
                        "point.")


def open_source(task_name: str, split: str, settings: StreamSettings):
  """The random-access source of a task's split (preparing it first if needed and allowed)."""
  if task_name in _DIRECT:
    return _DIRECT[task_name](split)
  cached = seqio_cache.find(settings.seqio_cache_dirs, task_name, split)
  if cached is not None:
    import seqio  # pylint: disable=g-import-not-at-top
    features = seqio.get_mixture_or_task(task_name).output_features
    return seqio_cache.SeqioCacheSource(cached, split, {name: f.dtype.as_numpy_dtype for name, f in features.items()})
  from shardline.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  from shardline.data import prepared  # pylint: disable=g-import-not-at-top
  _, fingerprint, directory = prepare_lib.locate(task_name, split, settings.cache_dir)
  if prepared.read_manifest(directory) is None:
    if not settings.prepare_on_first_use:
      others = prepare_lib.other_versions(settings.cache_dir, task_name, split, fingerprint)
      raise UserError(
          f"Task {task_name!r} split {split!r} is not prepared under stream.cache_dir = {settings.cache_dir} (no "
          f"{directory}/{prepared.MANIFEST})"
          + (f"; what is there was made by a different task version or preprocessing: {' | '.join(others)}"
             if others else "")
          + f". Run `shardline data prepare --gin_file=<your experiment>.gin --split={split}` on this host, or "
          "set stream.cache_dir to where it was prepared.")
    prepare_lib.prepare(task_name, split, settings.cache_dir)
  return prepared.PreparedSource(directory, fingerprint)
