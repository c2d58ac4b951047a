"""`shardline data prepare`: a seqio task's split, its deterministic preprocessors applied once, written as
ArrayRecord shards with a manifest (prepared.py).

- Shards are written in parallel, one thread per shard: each reads its slice of the task through seqio's
  ShardInfo, so TensorFlow's own threads do the preprocessing off the GIL.
- Resumable: a shard is written to a temporary file and renamed into place, then a small marker records its
  size, SHA-256 and the task fingerprint. A re-run keeps every shard whose marker and bytes agree and rewrites the
  rest, so a killed prepare continues where it stopped and a half-written shard never reads as complete.
- The manifest is written last. Re-running a finished prepare checks every shard's SHA-256 and rewrites only a
  shard that is missing or damaged. A folder holding the cache of a different task or preprocessing is refused.
"""
import concurrent.futures
import hashlib
import json
import math
import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np
import tqdm

from shardline.core.errors import UserError
from shardline.data import fingerprint as fingerprint_lib
from shardline.data import prepared
from shardline.data import records

EXAMPLES_PER_SHARD = 20_000


def split_dir(cache_dir: str, task: str, split: str, fingerprint: Dict[str, Any]) -> str:
  """Where a task's prepared split lives under a cache root: <cache_dir>/<task>/<split>.<fingerprint hash>, so a
  changed preprocessing is prepared next to the old one and never over it."""
  digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser(cache_dir), task, f"{split}.{digest}")


def other_versions(cache_dir: str, task: str, split: str, fingerprint: Dict[str, Any]) -> List[str]:
  """'<folder>: <differences>' for every prepared copy of the split made by another task version or
  preprocessing."""
  root = os.path.join(os.path.expanduser(cache_dir), task)
  found = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    directory = os.path.join(root, name)
    if name.startswith(split + ".") and directory != split_dir(cache_dir, task, split, fingerprint):
      manifest = prepared.read_manifest(directory)
      if manifest is not None:
        found.append(f"{directory}: " + "; ".join(
            prepared.fingerprint_differences(manifest["fingerprint"], fingerprint)))
  return found


def locate(task, split: str, cache_dir: str):
  """(the fingerprint of a seqio task's split, and the folder its prepared copy has under cache_dir); a UserError
  for a mixture or an absent split."""
  import seqio  # pylint: disable=g-import-not-at-top
  if not isinstance(task, seqio.Task):
    raise UserError(f"{task.name!r} is a seqio mixture; prepare each of its tasks "
                    f"({', '.join(t.name for t in task.tasks)}).")
  if split not in task.splits:
    raise UserError(f"Task {task.name!r} has no split {split!r}; it has {', '.join(task.splits)}.")
  fingerprint = fingerprint_lib.of_task(task, split, prepared.FORMAT_VERSION)
  return fingerprint, split_dir(cache_dir, task.name, split, fingerprint)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_json(path: str, value: Any) -> None:
  temporary = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
  with open(temporary, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(temporary, path)


def _spec(value: np.ndarray, encoding: Optional[str]) -> Dict[str, Any]:
  return {"dtype": value.dtype.str, "shape": list(value.shape), "encoding": encoding}


class _ShardWriter:
  """Writes shard `index` of `count` of a task's split into `directory`."""

  def __init__(self, task, split: str, directory: str, count: int, fingerprint: Dict[str, Any], progress):
    self.task, self.split, self.directory, self.count = task, split, directory, count
    self.fingerprint, self.progress = fingerprint, progress

  def complete(self, index: int) -> Optional[Dict[str, Any]]:
    """The marker of shard `index` if the shard on disk is complete and of this task; None otherwise."""
    name = prepared.shard_name(self.split, index, self.count)
    path, marker_path = os.path.join(self.directory, name), os.path.join(self.directory, name + ".json")
    if not (os.path.exists(marker_path) and os.path.exists(path)):
      return None
    with open(marker_path) as f:
      marker = json.load(f)
    if marker["fingerprint"] != self.fingerprint:
      raise UserError(
          f"{self.directory} holds a partial prepare of a different task or preprocessing ("
          + "; ".join(prepared.fingerprint_differences(marker["fingerprint"], self.fingerprint))
          + "). Nothing was overwritten. Delete that folder, or prepare into another stream.cache_dir.")
    if os.path.getsize(path) != marker["bytes"] or _sha256(path) != marker["sha256"]:
      return None
    return marker

  def write(self, index: int) -> Dict[str, Any]:
    """Writes the shard and its marker; returns the marker."""
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    name = prepared.shard_name(self.split, index, self.count)
    path = os.path.join(self.directory, name)
    temporary = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    dataset = self.task.get_dataset(sequence_length=None, split=self.split, shuffle=False, use_cached=False,
                                    shard_info=seqio.ShardInfo(index, self.count))
    writer = array_record_module.ArrayRecordWriter(temporary, "group_size:1")
    features, examples = None, 0
    try:
      for example in tfds.as_numpy(dataset):
        example = {k: np.asarray(v) for k, v in example.items()}
        if features is None:
          features = {k: _spec(v, records.PNG if records.is_image(v) else None) for k, v in example.items()}
        writer.write(records.encode(example, {k: s["encoding"] for k, s in features.items() if s["encoding"]}))
        examples += 1
        self.progress(1)
    finally:
      writer.close()
    os.replace(temporary, path)
    marker = {"file": name, "examples": examples, "bytes": os.path.getsize(path), "sha256": _sha256(path),
              "features": features, "fingerprint": self.fingerprint}
    _write_json(path + ".json", marker)
    return marker


def _remove_abandoned_temporaries(directory: str) -> None:
  """Deletes the temporary files of prepares that were killed (their process is gone); a live one's stay."""
  import psutil  # pylint: disable=g-import-not-at-top
  for name in os.listdir(directory):
    if ".tmp-" in name:
      pid = name.rsplit(".tmp-", 1)[1].split("-")[0]
      if pid.isdigit() and not psutil.pid_exists(int(pid)):
        os.remove(os.path.join(directory, name))


def _num_shards(task, split: str, num_shards: Optional[int]) -> int:
  if num_shards is not None:
    if num_shards < 1:
      raise UserError(f"--num_shards = {num_shards}; it must be a positive integer.")
    return num_shards
  try:
    known = task.source.num_input_examples(split)
  except Exception:  # pylint: disable=broad-except  seqio sources raise several types when they do not know
    known = None
  return max(1, math.ceil(known / EXAMPLES_PER_SHARD)) if known else 16


def _kind(dtype: str) -> str:
  """A feature's dtype as shards must agree on it: byte strings (an encoded image, '|S84923') vary in length from
  shard to shard, as each shard's longest one sets it."""
  return "bytes" if np.dtype(dtype).kind == "S" else dtype


def _features(markers) -> Dict[str, Any]:
  features = None
  for marker in markers:
    if marker["features"] is None:
      continue  # an empty shard
    if features is None:
      features = marker["features"]
    elif {k: _kind(v["dtype"]) for k, v in marker["features"].items()} != {
        k: _kind(v["dtype"]) for k, v in features.items()}:
      raise UserError(f"The shards of one split disagree on feature types ({features} vs {marker['features']}); "
                      "the task's preprocessors must give every example the same features.")
    else:  # shapes may vary between examples (e.g. encoded images): keep a dimension only where all agree
      for name, spec in marker["features"].items():
        if spec["shape"] != features[name]["shape"]:
          features[name]["shape"] = [a if a == b else None for a, b in zip(spec["shape"], features[name]["shape"])]
  return features or {}


def prepare(task, split: str, cache_dir: str, num_shards: Optional[int] = None,
            workers: Optional[int] = None, quiet: bool = False) -> str:
  """Prepares (or finishes preparing) a task's split under `cache_dir`; returns the split's folder.

  Args:
    task: a seqio task (shardline.tasks.registry.get_task looks one up by name).
    split: the split to write.
    cache_dir: the cache root; the split goes to <cache_dir>/<task>/<split>.<fingerprint hash>.
    num_shards: shards to write; by default one per 20,000 examples (16 when the size is unknown).
    workers: shards written at once; by default the machine's cores.
    quiet: no progress bar.
  """
  task_name = task.name
  fingerprint, directory = locate(task, split, cache_dir)
  manifest = prepared.read_manifest(directory)
  if manifest is not None and manifest["fingerprint"] != fingerprint:
    raise UserError(f"{directory} holds the prepared split of a different task or preprocessing ("
                    + "; ".join(prepared.fingerprint_differences(manifest["fingerprint"], fingerprint))
                    + "). Nothing was overwritten. Delete that folder, or prepare into another stream.cache_dir.")
  os.makedirs(directory, exist_ok=True)
  _remove_abandoned_temporaries(directory)
  if manifest is not None and num_shards not in (None, len(manifest["shards"])):
    raise UserError(f"{directory} is already prepared in {len(manifest['shards'])} shards, not {num_shards}. "
                    "Nothing was changed. To re-shard, delete that folder and prepare again.")
  count = len(manifest["shards"]) if manifest is not None else _num_shards(task, split, num_shards)
  lock = threading.Lock()
  bar = tqdm.tqdm(desc=f"prepare {task_name}/{split}", unit="ex", disable=True if quiet else None, dynamic_ncols=True)

  def progress(n: int) -> None:
    with lock:
      bar.update(n)

  writer = _ShardWriter(task, split, directory, count, fingerprint, progress)
  markers: Dict[int, Dict[str, Any]] = {}
  for index in range(count):
    marker = writer.complete(index)
    if marker is not None:
      markers[index] = marker
      progress(marker["examples"])
  pending = [i for i in range(count) if i not in markers]
  try:
    with concurrent.futures.ThreadPoolExecutor(max(1, min(workers or os.cpu_count() or 1, len(pending) or 1))) as pool:
      for index, marker in zip(pending, pool.map(writer.write, pending)):
        markers[index] = marker
  finally:
    bar.close()
  ordered = [markers[i] for i in range(count)]
  total = sum(m["examples"] for m in ordered)
  if not total:
    raise UserError(f"Task {task_name!r} split {split!r} produced no examples; check its data source.")
  _write_json(os.path.join(directory, prepared.MANIFEST), {
      "format": prepared.FORMAT_VERSION, "task": task_name, "split": split, "fingerprint": fingerprint,
      "features": _features(ordered), "num_examples": total,
      "shards": [{k: m[k] for k in ("file", "examples", "bytes", "sha256")} for m in ordered]})
  return directory
