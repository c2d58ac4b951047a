"""The MGDT task: windows of K consecutive timesteps from the generated episodes of several games.

The data are generated on the first use (generate.py) into `data_dir` and reused afterwards. The windows are read
directly from the episode files (windows.py); the task is also a seqio task over the same windows. Each example:
  observations [K, 84, 84] uint8, returns_to_go [K] float32, actions [K] int32, rewards [K] int32 (clipped),
  game [] int32 (index into `games`, for reporting only; the model never sees it).
Windows start every `stride` steps. Every `validation_every`-th episode of a game is held out as 'validation'.
"""
import hashlib
import json
import os
from typing import Dict, Sequence, Tuple

import gin
import numpy as np

from shardline.tasks.tensorflow_setup import seqio, tf
from shardline.core import paths
from shardline.core.errors import UserError
from shardline.tasks import splits
from shardline.tasks.atari import episodes, generate, windows

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), ".cache", "shardline", "atari")
FEATURES = {"observations": tf.uint8, "returns_to_go": tf.float32, "actions": tf.int32, "rewards": tf.int32,
            "game": tf.int32}
RANKS = {"observations": 3, "returns_to_go": 1, "actions": 1, "rewards": 1, "game": 0}


def ensure_generated(data_dir: str, games: Sequence[str], episodes_per_game: int, max_steps: int,
                     seed: int) -> None:
  """Generates the episodes unless data_dir already holds the same configuration."""
  stats_path = os.path.join(data_dir, "stats.json")
  wanted = {"games": list(games), "episodes_per_game": episodes_per_game, "max_steps": max_steps, "seed": seed}
  if os.path.exists(stats_path):
    with open(stats_path) as f:
      stats = json.load(f)
    if stats["config"] == wanted and all("lengths" in s for s in stats["games"].values()):
      return  # (data from before the lengths were recorded is generated again)
  generate.generate(data_dir, games, episodes_per_game, max_steps, seed)


@gin.configurable(module="tasks")
def atari_episodes(data_dir: str = DEFAULT_DATA_DIR, games: Sequence[str] = generate.DEFAULT_GAMES,
                   episodes_per_game: int = 10, max_steps: int = 500, seed: int = 0, timesteps: int = 4,
                   stride: int = 2, validation_every: int = 5) -> str:
  """Registers (once) and returns the name of the MGDT window task, generating the data if needed."""
  if validation_every < 2 or episodes_per_game < validation_every:
    raise UserError(f"tasks.atari_episodes: episodes_per_game={episodes_per_game} with validation_every="
                    f"{validation_every} leaves no episode for 'train' or none for 'validation' (every "
                    "validation_every-th episode of a game is held out). Use validation_every >= 2 and "
                    "episodes_per_game >= validation_every.")
  games = tuple(games)
  data_dir = paths.check_local(data_dir, "tasks.atari_episodes.data_dir", "the generated episodes are read as "
                               "local ArrayRecord files (every host generates the same data in under a minute).")
  ensure_generated(data_dir, games, episodes_per_game, max_steps, seed)
  key = repr((os.path.abspath(data_dir), games, episodes_per_game, max_steps, seed, timesteps, stride,
              validation_every))
  name = f"atari_k{timesteps}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
  open_split = lambda split: windows.AtariWindows(data_dir, games, split, timesteps, stride, validation_every)
  if name not in seqio.TaskRegistry.names():
    def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
      del shuffle_files
      source = open_split(split)
      return tf.data.Dataset.from_generator(lambda: (source[i] for i in range(len(source))), output_signature={
          key: tf.TensorSpec((None,) * rank, FEATURES[key]) for key, rank in RANKS.items()})
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, splits=windows.SPLITS),
                           preprocessors=[], output_features={
                               key: seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=dtype,
                                                  rank=RANKS[key]) for key, dtype in FEATURES.items()})
  splits.register_direct(name, open_split)
  return name


def returns_to_go_range(data_dir: str, games: Sequence[str]) -> Tuple[int, int]:
  """The lowest and highest return-to-go (clipped rewards) over every episode of `games` in data_dir."""
  low, high = np.inf, -np.inf
  for game in games:
    for episode in episodes.read(episodes.path_for(os.path.expanduser(data_dir), game)):
      low, high = min(low, float(episode["returns_to_go"].min())), max(high, float(episode["returns_to_go"].max()))
  return int(np.floor(low)), int(np.ceil(high))


def behaviour_stats(data_dir: str) -> Dict[str, dict]:
  """The per-game behaviour statistics written by the generator."""
  with open(os.path.join(os.path.expanduser(data_dir), "stats.json")) as f:
    return json.load(f)["games"]
