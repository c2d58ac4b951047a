"""Episodes on disk: one ArrayRecord file per game, one record per episode.

A record is an uncompressed .npz (numpy's own format, read with allow_pickle=False, so no pickle) holding
  observations [T, 84, 84] uint8, actions [T] int32, rewards [T] float32 (raw game reward),
  returns_to_go [T] float32 (sum of the *clipped* rewards from t to the end, the quantity MGDT conditions on),
  and the scalars episode_return (raw) and policy (its name).
A record that does not parse raises a UserError naming the file and record.
"""
import io
import os
from typing import Dict, Iterator, List

import numpy as np

from shardline.core.errors import UserError

Episode = Dict[str, np.ndarray]


def clip_reward(reward) -> np.ndarray:
  """Rewards clipped to {-1, 0, +1}."""
  return np.sign(np.asarray(reward)).astype(np.int32)


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
  """Suffix sums of the clipped rewards."""
  return np.cumsum(clip_reward(rewards)[::-1])[::-1].astype(np.float32)


def encode(episode: Episode) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **episode)
  return buffer.getvalue()


def decode(record: bytes, where: str) -> Episode:
  try:
    with np.load(io.BytesIO(record), allow_pickle=False) as data:
      episode = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile / numpy raise several types for damaged bytes
    raise UserError(f"Malformed episode record {where}: {type(e).__name__}: {e}. Delete the data directory to "
                    "regenerate it, or restore the file.") from e
  missing = {"observations", "actions", "rewards", "returns_to_go"} - set(episode)
  if missing:
    raise UserError(f"Episode record {where} lacks {sorted(missing)}; it was not written by shardline's "
                    "Atari generator.")
  return episode


def path_for(data_dir: str, game: str) -> str:
  return os.path.join(data_dir, f"episodes-{game}.array_record")


def write(path: str, episodes: List[Episode]) -> None:
  """Writes all episodes of one game (to a temporary name first, so readers never see half a file)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  for episode in episodes:
    writer.write(encode(episode))
  writer.close()
  os.replace(tmp, path)


def read(path: str) -> Iterator[Episode]:
  """Streams the episodes of one file."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UserError(f"Episode file {path} does not exist. Generate the data first (the MGDT experiments do it on "
                    "their first run).")
  reader = array_record_module.ArrayRecordReader(path)
  try:
    for i in range(reader.num_records()):
      yield decode(reader.read([i])[0], f"{i} of {path}")
  finally:
    reader.close()
