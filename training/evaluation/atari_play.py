"""Plays Atari games in the real emulator with a trained MGDT, and reports what Atari papers report.

This is evaluation code: it drives a model (`shardline infer` calls it through mgdt.DecisionTransformerAgent.
player) on the emulator and the dataset statistics of tasks/atari, which themselves know nothing of models.

For each game and each optimality bias kappa (the configured one, and 0 to show what the bias does), N
episodes with the same preprocessing and step cap as the dataset. Reported per game: the mean raw score, the
human-normalised score (score - random) / (human - random) with the published random and human scores, the
dataset's behaviour-policy mean and best, and a uniformly random policy played on the same N emulator seeds
with the same cap (the fair baseline for capped episodes). Also writes a PNG of the attention from the action decision over
the current frame's patches, one decision per game.
"""
import json
import os
from typing import Any, Dict, Sequence

import gin
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from shardline.models.mgdt import tokens  # noqa: E402
from shardline.partitioning import context  # noqa: E402
from shardline.tasks.atari import environment, generate, task  # noqa: E402

# Published per-game scores of a uniformly random policy and of a human tester (Mnih et al., 2015; the
# normalisation the MGDT paper uses). Full episodes; shardline's episodes stop at max_steps, which makes
# human-normalised scores of capped play conservative.
RANDOM_SCORES = {"Breakout": 1.7, "Pong": -20.7, "Freeway": 0.0, "Enduro": 0.0, "RoadRunner": 11.5, "Boxing": 0.1,
                 "SpaceInvaders": 148.0}
HUMAN_SCORES = {"Breakout": 30.5, "Pong": 14.6, "Freeway": 29.6, "Enduro": 860.5, "RoadRunner": 7845.0,
                "Boxing": 12.1, "SpaceInvaders": 1668.7}


def human_normalised(game: str, score: float) -> float:
  return (score - RANDOM_SCORES[game]) / (HUMAN_SCORES[game] - RANDOM_SCORES[game])


def play_episode(agent, params, decide, game: str, seed: int, kappa: float, max_steps: int, capture_at: int = -1,
                 return_support=None):
  """One episode; returns (score, captured (frame, attention over its patches) or None). `return_support`
  ([low, high] or None) limits the sampled returns (DecisionTransformerAgent.decide)."""
  c = agent.config
  env = environment.AtariEnv(game, seed, max_steps)
  observation, done, score, rng = env.reset(), False, 0.0, jax.random.PRNGKey(seed)
  frames, return_bins, actions, rewards = [], [], [], []
  captured = None
  while not done:
    frames.append(observation)
    return_bins.append(0)
    actions.append(0)
    rewards.append(1)  # placeholder tokens of the current timestep (masked from the decision)
    k = min(len(frames), c.timesteps)
    history = {"observations": jnp.asarray(np.stack(frames[-k:]))[None],
               "return_bins": jnp.asarray(return_bins[-k:], jnp.int32)[None],
               "actions": jnp.asarray(actions[-k:], jnp.int32)[None],
               "reward_tokens": jnp.asarray(rewards[-k:], jnp.int32)[None]}
    rng, step_rng = jax.random.split(rng)
    action, return_bin, weights = decide(params, history, step_rng, kappa, return_support)
    action, return_bin = int(action), int(return_bin)
    if env.steps == capture_at:
      query = (k - 1) * c.tokens_per_step + c.num_patches + tokens.RETURN_OFFSET  # the action read-out
      first = (k - 1) * c.tokens_per_step
      patch_weights = np.asarray(weights)[:, query, first:first + c.num_patches].mean(0)
      captured = (observation, patch_weights)
    observation, reward, done = env.step(action)
    score += reward
    return_bins[-1], actions[-1], rewards[-1] = return_bin, action, int(np.sign(reward)) + 1
    if len(frames) > c.timesteps:  # keep only the window the model sees
      frames, return_bins, actions, rewards = (x[-c.timesteps:] for x in (frames, return_bins, actions, rewards))
  return score, captured


def plot_attention(captures: Dict[str, Any], patch: int, path: str) -> None:
  fig, axes = plt.subplots(1, len(captures), figsize=(max(2.8 * len(captures), 4.2), 3.4), squeeze=False)
  for ax, (game, (frame, weights)) in zip(axes[0], captures.items()):
    n = int(np.sqrt(len(weights)))
    ax.imshow(frame, cmap="gray")
    ax.imshow(np.kron(weights.reshape(n, n), np.ones((patch, patch))), cmap="inferno", alpha=0.55)
    ax.set_title(f"{game}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("MGDT: attention of the action decision\nover the current frame's 14x14 patches", fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


@gin.configurable(module="evaluators")
def play_atari(agent, params, output_dir: str, games: Sequence[str] = gin.REQUIRED, episodes: int = 3,
               max_steps: int = 500, data_dir: str = task.DEFAULT_DATA_DIR, seed: int = 1000,
               compare_kappa_zero: bool = True, limit_returns_to_data: bool = True) -> Dict[str, Any]:
  """Plays `episodes` episodes of each game; prints and returns the score table, writes JSON and the PNG.

  limit_returns_to_data: sample returns only within the lowest and highest return-to-go of the dataset's
  episodes (over all games: play stays game-agnostic). False samples over all bins, where the tilt picks returns
  no episode reached and the action is conditioned on an untrained return embedding (sampling.py).
  """
  behaviour = task.behaviour_stats(data_dir)
  return_support = None
  if limit_returns_to_data:
    return_support = task.returns_to_go_range(data_dir, games)
    print(f"Sampling returns within the dataset's returns-to-go {list(return_support)}", flush=True)
  # One decision at a time is a tiny computation: run it on one device, outside the training mesh.
  params = jax.device_put(jax.device_get(params), jax.devices()[0])
  decide = jax.jit(agent.decide)
  with context.use_partitioner(None):
    return _play_all(agent, params, decide, output_dir, games, episodes, max_steps, behaviour, seed,
                     compare_kappa_zero, return_support)


def _play_all(agent, params, decide, output_dir, games, episodes, max_steps, behaviour, seed,
              compare_kappa_zero, return_support) -> Dict[str, Any]:
  kappas = [agent.kappa] + ([0.0] if compare_kappa_zero and agent.kappa != 0 else [])
  support = None if return_support is None else jnp.asarray(return_support)
  results, captures = {}, {}
  for game in games:
    results[game] = {}
    for kappa in kappas:
      scores = []
      for i in range(episodes):
        capture_at = min(40, max_steps // 2) if (i == 0 and kappa == agent.kappa) else -1
        score, captured = play_episode(agent, params, decide, game, seed + i, kappa, max_steps, capture_at,
                                         support)
        scores.append(score)
        if captured is not None:
          captures[game] = captured
      results[game][f"kappa={kappa:g}"] = {"scores": scores, "mean": float(np.mean(scores)),
                                           "human_normalised": human_normalised(game, float(np.mean(scores)))}
      print(f"  {game} kappa={kappa:g}: scores {scores}", flush=True)
    random_scores = [float(generate.play_episode(game, "random", seed + i, max_steps)["episode_return"])
                     for i in range(episodes)]
    print(f"  {game} random policy: scores {random_scores}", flush=True)
    results[game]["random_played"] = {"scores": random_scores, "mean": float(np.mean(random_scores))}
    results[game]["behaviour"] = behaviour[game]["behaviour"]
    results[game]["return_support"] = None if return_support is None else list(return_support)
  lines = [f"{'game':>14} | " + " | ".join(f"{'score k=' + format(k, 'g'):>11} {'HNS':>6}" for k in kappas)
           + " | behaviour mean   best | random, same seeds"]
  for game in games:
    r = results[game]
    cells = " | ".join(f"{r[f'kappa={k:g}']['mean']:>11.2f} {r[f'kappa={k:g}']['human_normalised']:>6.3f}"
                       for k in kappas)
    lines.append(f"{game:>14} | {cells} | {r['behaviour']['mean']:>14.2f} {r['behaviour']['best']:>6.1f} | "
                 f"{r['random_played']['mean']:>8.2f}")
  print("\n".join(lines))
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "mgdt_play.json"), "w") as f:
    json.dump(results, f, indent=2)
  figure = os.path.join(output_dir, "mgdt_attention.png")
  if captures:
    plot_attention(captures, agent.config.patch_size, figure)
    print(f"Attention figure: {figure}")
  return {"results": results, "figure": figure}
