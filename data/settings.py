"""The stream settings bound in gin (`data.stream.*`): where prepared splits live, workers, prefetch, transforms.

They are checked once, when gin builds them, so every reader of a split (training, evaluation, few-shot, infer)
sees settings that already passed.
"""
import dataclasses
import os
from typing import Optional, Sequence

import gin

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.data.source import Transform

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "shardline", "prepared")


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
  train_transform: Optional[Transform] = None
  eval_transform: Optional[Transform] = None
  seqio_cache_dirs: Sequence[str] = ()

  def __post_init__(self):
    if self.workers < 0:
      raise UserError(f"stream.workers = {self.workers}; use 0 (load in the training process) or more.")
    if self.prefetch < 1:
      raise UserError(f"stream.prefetch = {self.prefetch}; at least 1 batch must be built ahead of the step.")
    for name in ("train_transform", "eval_transform"):
      transform = getattr(self, name)
      if transform is not None and not isinstance(transform, Transform):
        raise UserError(f"stream.{name} = {transform!r} is not a shardline transform; use @data.train_images(), "
                        "@data.eval_images(), or a subclass of shardline.data.source.Transform.")
    for directory in self.seqio_cache_dirs:
      paths.check_local(directory, "stream.seqio_cache_dirs", "ArrayRecord shards are read with local file I/O. "
                        "Mount the bucket (e.g. with gcsfuse, as MaxText reads ArrayRecord) and give the mount "
                        "point.")
