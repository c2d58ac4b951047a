"""Soak: a long run of the tiny model with frequent checkpoints, watched from outside the process.

  python -m benchmarks.soak [--steps 2000] [--checkpoint_every 50] [--keep 3]

Runs `shardline train` on the tiny ViT-22B experiment in a subprocess and samples, once a second, its resident
memory (RSS) and the size of its MODEL_DIR; step times come from MODEL_DIR/metrics/train.jsonl. It prints the
figures by phase of the run, so growth in memory or disk, or drift in step time, shows as a trend.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

from benchmarks import timing


def _disk_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except FileNotFoundError:  # a checkpoint pruned while we walked
        pass
  return total


def _rss_with_children(process: psutil.Process) -> int:
  try:
    return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
  except psutil.NoSuchProcess:
    return 0


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--checkpoint_every", type=int, default=50)
  parser.add_argument("--keep", type=int, default=3)
  parser.add_argument("--log_every", type=int, default=50)
  args = parser.parse_args()
  model_dir = tempfile.mkdtemp(prefix="shardline-soak-")
  command = [sys.executable, "-m", "shardline.launch.cli", "train",
             "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin", f"--gin.MODEL_DIR='{model_dir}'",
             f"--gin.train.steps={args.steps}", f"--gin.train.checkpoint_every={args.checkpoint_every}",
             f"--gin.train.checkpointing.keep={args.keep}", f"--gin.train.log_every={args.log_every}",
             f"--gin.train.eval_every={args.steps}"]
  start = time.time()
  child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
  watched = psutil.Process(child.pid)
  samples = []  # (seconds, rss bytes, disk bytes)
  while child.poll() is None:
    samples.append((time.time() - start, _rss_with_children(watched), _disk_bytes(model_dir)))
    time.sleep(1.0)
  if child.returncode != 0:
    raise SystemExit(f"soak run failed ({child.returncode}): {child.stderr.read()[-2000:]}")
  rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics", "train.jsonl"))]
  env = timing.environment()
  print(f"# soak: {args.steps} steps, checkpoint every {args.checkpoint_every}, keep {args.keep}; "
        f"{env['device']}, jax {env['jax']}, {env['date']}; MODEL_DIR {model_dir}")
  print(f"# wall {time.time() - start:.0f} s; checkpoints left: {sorted(os.listdir(os.path.join(model_dir, 'checkpoints')))}")
  print("| phase | steps | median ms/step | RSS (MiB, max) | MODEL_DIR (MiB, max) |")
  print("|---|---|---|---|---|")
  quarters = 4
  train_time = samples[-1][0]
  for q in range(quarters):
    lo, hi = q * args.steps // quarters, (q + 1) * args.steps // quarters
    times = sorted(r["step_time"] for r in rows if lo < r["step"] <= hi)
    window = [s for s in samples if q * train_time / quarters <= s[0] <= (q + 1) * train_time / quarters]
    rss = max(s[1] for s in window) / 2**20 if window else float("nan")
    disk = max(s[2] for s in window) / 2**20 if window else float("nan")
    print(f"| {q + 1}/{quarters} | {lo + 1}-{hi} | {1e3 * times[len(times) // 2]:.1f} | {rss:.0f} | {disk:.1f} |")


if __name__ == "__main__":
  main()
