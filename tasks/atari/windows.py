"""The MGDT examples as a random-access source: windows of K consecutive timesteps, indexed over the episode
records (one ArrayRecord file per game, one record per episode) without loading them.

The index is built from the episode lengths the generator writes to stats.json, so opening a split reads no
episode. Window i is (game, episode, first step); reading it decodes that one episode record, and a batch decodes
each of its episodes once.
"""
import json
import os
from typing import Dict, List, Sequence

import numpy as np

from shardline.core.errors import UserError
from shardline.data import source
from shardline.tasks.atari import episodes

SPLITS = ("train", "validation")


def episode_lengths(data_dir: str) -> Dict[str, List[int]]:
  """Each game's episode lengths (steps), as the generator recorded them."""
  with open(os.path.join(data_dir, "stats.json")) as f:
    games = json.load(f)["games"]
  return {game: s["lengths"] for game, s in games.items()}


class AtariWindows(source.Source):
  """Random access to one split's windows.

  Example: observations [K, 84, 84] uint8, returns_to_go [K] float32, actions [K] int32, rewards [K] int32
  (clipped), game [] int32 (the index into `games`). Every validation_every-th episode of a game is
  'validation'; windows start every `stride` steps, in the order (game, episode, start). Picklable: the files
  reopen in a loader worker.
  """

  def __init__(self, data_dir: str, games: Sequence[str], split: str, k: int, stride: int, validation_every: int):
    if split not in SPLITS:
      raise UserError(f"The Atari episodes have no split {split!r}; they have {', '.join(SPLITS)}.")
    self.data_dir, self.games, self.split, self.k = data_dir, tuple(games), split, k
    lengths = episode_lengths(data_dir)
    index = []  # (game, episode, start)
    for g, game in enumerate(self.games):
      for e, length in enumerate(lengths[game]):
        if (e % validation_every == validation_every - 1) == (split == "validation"):
          index.extend((g, e, start) for start in range(0, length - k + 1, stride))
    if not index:
      raise UserError(f"No Atari episode of {', '.join(self.games)} in {data_dir} is {k} steps long for the "
                      f"{split!r} split. Generate longer episodes (tasks.atari_episodes.max_steps) or use fewer "
                      "timesteps.")
    self.index = np.array(index, np.int64)  # [windows, 3]
    self._readers = {}

  def __getstate__(self):
    return {**self.__dict__, "_readers": {}}

  def __len__(self) -> int:
    return len(self.index)

  def _episode(self, g: int, e: int) -> episodes.Episode:
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    path = episodes.path_for(self.data_dir, self.games[g])
    if g not in self._readers:
      if not os.path.exists(path):
        raise UserError(f"Episode file {path} does not exist. Delete {self.data_dir}/stats.json to regenerate "
                        "the data on the next run.")
      self._readers[g] = array_record_module.ArrayRecordReader(path)
    return episodes.decode(self._readers[g].read([e])[0], f"{e} of {path}")

  def _window(self, episode: episodes.Episode, g: int, start: int) -> Dict[str, np.ndarray]:
    steps = slice(start, start + self.k)
    return {"observations": episode["observations"][steps].astype(np.uint8),
            "returns_to_go": episode["returns_to_go"][steps].astype(np.float32),
            "actions": episode["actions"][steps].astype(np.int32),
            "rewards": episodes.clip_reward(episode["rewards"][steps]), "game": np.int32(g)}

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    g, e, start = (int(v) for v in self.index[int(index)])
    return self._window(self._episode(g, e), g, start)

  def examples(self, indices: Sequence[int]) -> List[Dict[str, np.ndarray]]:
    """Several windows, decoding each episode they come from once."""
    rows = self.index[np.asarray(indices, np.int64)]
    decoded = {(g, e): self._episode(g, e) for g, e in {(int(g), int(e)) for g, e, _ in rows}}
    return [self._window(decoded[int(g), int(e)], int(g), int(start)) for g, e, start in rows]

  def describe(self) -> str:
    return (f"{len(self):,} windows of {self.k} steps over the {self.split!r} episodes of {', '.join(self.games)} "
            f"in {self.data_dir}, read directly")
