"""A prepared split on disk: ArrayRecord shards (group size 1, so any record is read directly) and a manifest.

  <cache>/<task>/<split>/manifest.json       feature specs, example counts, per-shard sizes and SHA-256s, and
                                             the task's fingerprint (what produced the records)
  <cache>/<task>/<split>/<split>-00000-of-00004.array_record ...

`PreparedSource` reads one: its length is the split's size and `source[i]` is example i as numpy arrays
(images decoded). Opening checks that every shard is present at its recorded size; damage inside a shard is
caught when its records are read (riegeli hashes every chunk) and named by shard and record.
"""
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from shardline.core.errors import UserError
from shardline.data import records, shards, source

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def read_manifest(directory: str) -> Optional[Dict[str, Any]]:
  """The manifest in `directory`, or None when there is none (a prepare that has not finished)."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"The manifest {path} of a prepared split cannot be read ({e}). Delete the folder "
                    f"{directory} and run `shardline data prepare` again.") from e


def fingerprint_differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> List[str]:
  """'key: cache has X, the task now gives Y' for every differing component of two task fingerprints."""
  return [f"{key}: the cache has {have.get(key)!r}, the task now gives {want.get(key)!r}"
          for key in sorted(set(have) | set(want)) if have.get(key) != want.get(key)]


class PreparedSource(source.Source):
  """Random access to a prepared split: `len(source)` examples, `source[i]` a dict of numpy arrays.

  Picklable: each grain worker opens its own readers on first use.
  """

  def __init__(self, directory: str, fingerprint: Optional[Mapping[str, Any]] = None):
    manifest = read_manifest(directory)
    if manifest is None:
      raise UserError(f"No prepared data in {directory} (no {MANIFEST}). Prepare it with `shardline data prepare "
                      "--gin_file=<your experiment>.gin`, or point stream.cache_dir at the folder that holds it.")
    if fingerprint is not None and manifest["fingerprint"] != dict(fingerprint):
      raise UserError(
          f"The prepared data in {directory} was made by a different task version or preprocessing: "
          + "; ".join(fingerprint_differences(manifest["fingerprint"], fingerprint))
          + ". Nothing was changed. Delete that folder and prepare again, or set stream.cache_dir elsewhere.")
    self.directory = directory
    self.features: Dict[str, Dict[str, Any]] = manifest["features"]
    self.shards: List[Dict[str, Any]] = manifest["shards"]
    self._check_shards()
    self._records = shards.ShardedRecords(
        [os.path.join(directory, s["file"]) for s in self.shards], [s["examples"] for s in self.shards], "shard",
        "The shard is damaged; delete it and re-run `shardline data prepare`, which rewrites only that shard.")

  def _check_shards(self) -> None:
    for shard in self.shards:
      path = os.path.join(self.directory, shard["file"])
      if not os.path.exists(path):
        raise UserError(f"The shard {path} of a prepared split is missing. Re-run `shardline data prepare`, "
                        "which rewrites only what is missing.")
      size = os.path.getsize(path)
      if size != shard["bytes"]:
        raise UserError(f"The shard {path} is {size:,} bytes, but its manifest says {shard['bytes']:,} (SHA-256 "
                        f"{shard['sha256'][:12]}...): it is truncated or was overwritten. Delete it and re-run "
                        "`shardline data prepare`, which rewrites only that shard.")

  def __len__(self) -> int:
    return len(self._records)

  def feature_names(self) -> Tuple[str, ...]:
    return tuple(self.features)

  def record(self, index: int) -> bytes:
    """The stored bytes of example `index`."""
    return self._records.read(index)

  def __getitem__(self, index: int) -> records.Example:
    return self._example(index, self.record(index))

  def examples(self, indices: Sequence[int]) -> List[records.Example]:
    """Several examples, read shard by shard in one call each (much faster than one by one)."""
    return [self._example(int(i), record) for i, record in zip(indices, self._records.read_many(indices))]

  def _example(self, index: int, record: bytes) -> records.Example:
    stored = self._decode(index, record)
    for name, spec in self.features.items():
      if spec.get("encoding") == records.PNG:
        stored[name] = self._decode_image(index, stored[name])
    return stored

  def column(self, name: str, indices: Sequence[int]) -> np.ndarray:
    """One feature of the examples at `indices`, stacked, without decoding the others (e.g. every label)."""
    return np.stack([self._decode(i, self.record(i), keys=(name,))[name] for i in indices])

  def _decode(self, index: int, record: bytes, keys=None) -> records.Example:
    try:
      return records.decode(record, keys)
    except Exception as e:  # zipfile / numpy raise several types for damaged bytes
      raise UserError(f"The {self._records.where(index)} does not parse ({type(e).__name__}: {e}). Delete the "
                      "shard and re-run `shardline data prepare`.") from e

  def _decode_image(self, index: int, data: np.ndarray) -> np.ndarray:
    try:
      return records.decode_image(data)
    except Exception as e:  # PIL raises several types for bad image bytes
      raise UserError(f"The image of the {self._records.where(index)} fails to decode ({type(e).__name__}: "
                      f"{e}). Delete the shard and re-run `shardline data prepare`.") from e

  def describe(self) -> str:
    return f"{len(self):,} examples in {len(self.shards)} ArrayRecord shard(s) under {self.directory}"
