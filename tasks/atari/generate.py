"""Generates the MGDT dataset: behaviour policies of mixed quality play real ALE games.

Episode i of a game is played by policy KINDS[i % 5] with seed (seed, game, i); the result is deterministic.
Writes one ArrayRecord file per game and `stats.json` with per-game and per-policy statistics of the behaviour
returns (mean, best, worst, episodes, steps), which `play` reports next to the model's scores, and each episode's
length, which indexes the training windows (windows.py).

  python -m shardline.tasks.atari.generate --data_dir /tmp/atari --episodes_per_game 10
"""
import argparse
import json
import os
import sys
import time
import zlib
from typing import Dict, Sequence

import numpy as np

from shardline.core.errors import UserError
from shardline.tasks.atari import environment, episodes, policies

DEFAULT_GAMES = ("Breakout", "Pong", "Freeway", "Enduro", "RoadRunner")


def play_episode(game: str, kind: str, seed: int, max_steps: int) -> episodes.Episode:
  """One episode of a behaviour policy."""
  env = environment.AtariEnv(game, seed, max_steps)
  policy = policies.Policy(kind, game, np.random.default_rng(seed))
  observation, done = env.reset(), False
  observations, actions, rewards = [], [], []
  while not done:
    action = policy.act(env.ram())
    observations.append(observation)
    observation, reward, done = env.step(action)
    actions.append(action)
    rewards.append(reward)
  rewards = np.array(rewards, np.float32)
  return {"observations": np.stack(observations), "actions": np.array(actions, np.int32), "rewards": rewards,
          "returns_to_go": episodes.returns_to_go(rewards), "episode_return": np.float32(rewards.sum()),
          "policy": np.array(kind)}


def episode_seed(seed: int, game: str, index: int) -> int:
  return int(np.random.SeedSequence([seed, zlib.crc32(game.encode()), index]).generate_state(1)[0])


def _summary(returns: Sequence[float], steps: int) -> Dict[str, float]:
  return {"mean": float(np.mean(returns)), "best": float(np.max(returns)), "worst": float(np.min(returns)),
          "episodes": len(returns), "steps": int(steps)}


def generate(data_dir: str, games: Sequence[str] = DEFAULT_GAMES, episodes_per_game: int = 10,
             max_steps: int = 500, seed: int = 0) -> Dict[str, dict]:
  """Plays and writes every game's episodes; returns (and writes) the statistics."""
  if episodes_per_game < 1:
    raise UserError(f"episodes_per_game={episodes_per_game}: generate at least one episode per game.")
  os.makedirs(data_dir, exist_ok=True)
  stats = {}
  start = time.time()
  interactive = sys.stderr.isatty()  # a terminal gets a live line per episode; a log gets a line per game
  for g, game in enumerate(games):
    played = []
    for i in range(episodes_per_game):
      kind = policies.KINDS[i % len(policies.KINDS)]
      played.append(play_episode(game, kind, episode_seed(seed, game, i), max_steps))
      progress = (f"Generating Atari episodes: {game} {i + 1}/{episodes_per_game} (game {g + 1}/{len(games)}, "
                  f"{time.time() - start:.0f}s)")
      if interactive:
        print(f"\r{progress}", end="", file=sys.stderr, flush=True)
    if not interactive:
      print(progress, file=sys.stderr, flush=True)
    episodes.write(episodes.path_for(data_dir, game), played)
    returns = [float(e["episode_return"]) for e in played]
    by_policy = {kind: _summary([float(e["episode_return"]) for e in played if str(e["policy"]) == kind],
                                sum(len(e["actions"]) for e in played if str(e["policy"]) == kind))
                 for kind in policies.KINDS if any(str(e["policy"]) == kind for e in played)}
    stats[game] = {"behaviour": _summary(returns, sum(len(e["actions"]) for e in played)), "by_policy": by_policy,
                   "lengths": [len(e["actions"]) for e in played]}
  if interactive:
    print(file=sys.stderr)
  meta = {"games": list(games), "episodes_per_game": episodes_per_game, "max_steps": max_steps, "seed": seed}
  with open(os.path.join(data_dir, "stats.json"), "w") as f:
    json.dump({"config": meta, "games": stats}, f, indent=2)
  return stats


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--games", nargs="+", default=list(DEFAULT_GAMES))
  parser.add_argument("--episodes_per_game", type=int, default=10)
  parser.add_argument("--max_steps", type=int, default=500)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  stats = generate(args.data_dir, args.games, args.episodes_per_game, args.max_steps, args.seed)
  for game, s in stats.items():
    b = s["behaviour"]
    print(f"{game:>14}: behaviour return mean {b['mean']:.1f}, best {b['best']:.1f}, worst {b['worst']:.1f} "
          f"over {b['episodes']} episodes ({b['steps']} steps)")


if __name__ == "__main__":
  main()
