"""The one way a task's split is opened, for training, evaluation, `infer` and `shardline data prepare`: the
mapping from a task's name to its random-access source belongs here, in tasks/; data/ knows no task names.

A task registered with a direct source (`register_direct`: TFDS datasets built as ArrayRecord, the Zarr radar
archive, the Atari episodes) is read as it is. A task cached by seqio's own pipeline as ArrayRecord under one of
stream.seqio_cache_dirs is read in place (data/seqio_cache.py). Every other seqio task is read from its prepared
split under stream.cache_dir, which is prepared on first use unless stream.prepare_on_first_use is False (then
`shardline data prepare` must have run).

Nothing here imports TensorFlow or seqio at module level: a direct source (and a benchmark on synthetic
batches) needs neither.
"""
from typing import Callable, Dict, Optional

from shardline.core.errors import UserError
from shardline.data import feeder
from shardline.data import prepared
from shardline.data import seqio_cache
from shardline.data.settings import StreamSettings
from shardline.data.source import Source

_DIRECT: Dict[str, Callable[[str], Source]] = {}


def register_direct(task_name: str, open_source: Callable[[str], Source]) -> None:
  """Reads `task_name` through open_source(split) instead of a prepared cache."""
  _DIRECT[task_name] = open_source


def open_source(task_name: str, split: str, settings: StreamSettings) -> Source:
  """The random-access source of a task's split (preparing it first if needed and allowed)."""
  if task_name in _DIRECT:
    return _DIRECT[task_name](split)
  cached = seqio_cache.find(settings.seqio_cache_dirs, task_name, split)
  if cached is not None:
    features = _seqio_task(task_name).output_features
    return seqio_cache.SeqioCacheSource(cached, split, {name: f.dtype.as_numpy_dtype for name, f in features.items()})
  from shardline.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top  (TensorFlow, seqio)
  task = _seqio_task(task_name)
  fingerprint, directory = prepare_lib.locate(task, split, settings.cache_dir)
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
    prepare_lib.prepare(task, split, settings.cache_dir)
  return prepared.PreparedSource(directory, fingerprint)


def open_split(task_name: str, split: str, settings: Optional[StreamSettings] = None) -> feeder.SplitFeeder:
  """The feeder of a task's split: its source (prepared on first use where allowed) fed to the devices with
  the stream settings (gin's data.stream.* by default)."""
  settings = settings if settings is not None else StreamSettings()
  return feeder.SplitFeeder(open_source(task_name, split, settings), settings)


def prepare_split(task_name: str, split: str, settings: StreamSettings, num_shards: Optional[int] = None,
                  workers: Optional[int] = None) -> str:
  """`shardline data prepare`: writes (or finishes, or checks) a task's split under stream.cache_dir and returns
  its folder."""
  from shardline.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top  (TensorFlow, seqio)
  return prepare_lib.prepare(_seqio_task(task_name), split, settings.cache_dir, num_shards, workers)


def is_prepared(task_name: str, split: str, settings: StreamSettings) -> bool:
  """Whether the split already has a complete prepared copy under stream.cache_dir."""
  from shardline.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top  (TensorFlow, seqio)
  return prepared.read_manifest(prepare_lib.locate(_seqio_task(task_name), split, settings.cache_dir)[1]) is not None


def _seqio_task(task_name: str):
  from shardline.tasks import registry  # pylint: disable=g-import-not-at-top  (TensorFlow, seqio)
  return registry.get_task(task_name)
