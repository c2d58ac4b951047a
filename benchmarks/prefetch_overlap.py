"""Does a step wait for data while the input pipeline keeps up? The device prefetcher against loaders of known
speed.

  python -m benchmarks.prefetch_overlap [--step_ms 40] [--steps 40] [--ratios 0.25 0.5 0.9 1.5]

A jitted step (a chain of matmuls on one CPU device, timed first) consumes batches from data/pipeline.py's
DevicePrefetcher (stream.prefetch = 2, the default), whose loader takes `ratio` x the step time per batch. The
loader sleeps rather than computes, as a host's loader does beside an accelerator: here the "device" is the
same CPU, and a computing loader would slow the step it is measured against. For each ratio the table gives the
mean time a step waited for its batch, as the training loop's 'data wait' does. Below a ratio of 1 the wait
should be about 0; above it, about (ratio - 1) x the step.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shardline.data import pipeline

BATCH, WIDTH = 64, 512


def calibrated_step(step_ms: float):
  """A jitted x [BATCH, WIDTH] -> scalar taking about step_ms, and its measured time in seconds."""
  weights = jnp.asarray(np.random.default_rng(0).standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH), jnp.float32)

  def build(depth: int):
    @jax.jit
    def step(x):
      for _ in range(depth):
        x = jnp.tanh(x @ weights)  # [BATCH, WIDTH]
      return x.sum()
    return step

  def time_of(step, x) -> float:
    step(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(5):
      step(x).block_until_ready()
    return (time.perf_counter() - start) / 5

  x = jnp.ones((BATCH, WIDTH), jnp.float32)
  per_layer = time_of(build(64), x) / 64
  step = build(max(1, int(round(step_ms / 1e3 / per_layer))))
  return step, time_of(step, x)


class SleepingLoader:
  """grain element -> a [BATCH, WIDTH] batch after `seconds` (a loader of known speed)."""

  def __init__(self, seconds: float):
    self.seconds = seconds

  def __call__(self, element: int):
    time.sleep(self.seconds)
    return {"x": np.full((BATCH, WIDTH), element % 7, np.float32)}


def mean_wait(step, loader_seconds: float, steps: int, warmup: int = 3) -> float:
  """Mean seconds a step waited for its batch, after `warmup` steps."""
  sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))
  waits = []
  with pipeline.DevicePrefetcher(SleepingLoader(loader_seconds), 0, steps, {"x": sharding}, BATCH,
                                 workers=0, ahead=2) as prefetcher:
    for element in range(steps):
      start = time.perf_counter()
      batch = prefetcher.get(element)
      waits.append(time.perf_counter() - start)
      step(batch["x"]).block_until_ready()
  return float(np.mean(waits[warmup:]))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--step_ms", type=float, default=40.0)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.9, 1.5])
  args = parser.parse_args()
  step, step_seconds = calibrated_step(args.step_ms)
  print(f"step {step_seconds * 1e3:.1f} ms on {jax.devices()[0].platform}; prefetch 2 batches ahead; "
        f"{args.steps} steps each, the first 3 not counted")
  print("| loader time / step time | loader ms per batch | mean data wait per step | share of the step |")
  print("|---|---|---|---|")
  for ratio in args.ratios:
    wait = mean_wait(step, ratio * step_seconds, args.steps)
    print(f"| {ratio:.2f} | {ratio * step_seconds * 1e3:.1f} | {wait * 1e3:.2f} ms | "
          f"{wait / (wait + step_seconds):.1%} |", flush=True)


if __name__ == "__main__":
  main()
