"""End to end: `shardline train` on prepared JPEGs against the same step on synthetic batches.

  python -m benchmarks.train_e2e [--gin_file=benchmarks/gpu_e2e.gin] [--model_dir DIR]
                                 [--steps 60] [--gin.X=Y ...]

Two runs of the same gin files and overrides, each in its own process:
  1. `python -m benchmarks.train_step`: the step alone on synthetic batches (ms/step, images/s);
  2. `shardline train` into --model_dir (a new temporary folder unless given; a given one must not exist yet) for
     --steps steps: grain workers read the prepared JPEG shards
     (`python -m benchmarks.gpu_data` makes them), decode and augment, checkpoints are written and the test
     split is evaluated at the end.
From the run's MODEL_DIR/metrics/*.jsonl it prints one table: images/s of each, their ratio, the share of the
run's wall time its steps waited for data (the logging windows after the first, which holds the compile), and
the evaluation's accuracy. A data-wait share near 0 and a ratio near 1 mean the input pipeline keeps up.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence

from shardline.launch import flags

TRAIN_STEP_ROW = re.compile(r"^\| [^|]+ \| [^|]+ \| ([\d.]+) \| ([\d.]+) \|", re.M)


def _run(command: List[str]) -> subprocess.CompletedProcess:
  """Runs a command, echoing its output into this process's (the stage log)."""
  print("$ " + " ".join(command), flush=True)
  result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  print(result.stdout, flush=True)
  return result


def _rows(path: str) -> List[Dict[str, float]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarise(model_dir: str, synthetic_images_per_s: float) -> Dict[str, float]:
  """The figures of a finished run in `model_dir`, against the synthetic-batch images/s."""
  train = _rows(os.path.join(model_dir, "metrics", "train.jsonl"))[1:]  # the first window holds the compile
  evaluated = _rows(os.path.join(model_dir, "metrics", "eval.jsonl"))
  if not train:
    raise SystemExit(f"{model_dir}/metrics/train.jsonl has no logging window after the first: run more steps "
                     "or log more often (train.log_every).")
  images = statistics.median(r["examples_per_sec"] for r in train)
  return {"images_per_s": images, "synthetic_images_per_s": synthetic_images_per_s,
          "ratio": images / synthetic_images_per_s,
          "data_wait_share": statistics.median(r["data_wait_fraction"] for r in train),
          "eval_accuracy": evaluated[-1].get("eval_accuracy", float("nan")) if evaluated else float("nan"),
          "checkpoints": len([d for d in os.listdir(os.path.join(model_dir, "checkpoints")) if d.isdigit()])}


def main(argv: Sequence[str] = None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  flags.add_gin_flags(parser)
  parser.add_argument("--model_dir", default=None,
                      help="a folder that does not exist yet; a new temporary folder by default")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--synthetic_steps", type=int, default=10)
  argv = list(sys.argv[1:] if argv is None else argv)
  args, overrides = flags.parse_args(parser, argv)
  gin_args = ([f"--gin_file={f}" for f in args.gin_file or ["benchmarks/gpu_e2e.gin"]]
              + [f"--gin_bindings={b}" for b in list(args.gin_bindings) + list(overrides)])
  synthetic = _run([sys.executable, "-m", "benchmarks.train_step", *gin_args, f"--steps={args.synthetic_steps}",
                    "--warmup=2"])
  found = TRAIN_STEP_ROW.findall(synthetic.stdout)
  if synthetic.returncode or not found:
    raise SystemExit(f"the synthetic-batch step failed (exit {synthetic.returncode})")
  model_dir = args.model_dir or os.path.join(tempfile.mkdtemp(prefix="shardline_e2e_"), "run")
  if os.path.exists(model_dir):
    raise SystemExit(f"--model_dir {model_dir} exists: this benchmark measures a fresh run and never deletes a "
                     "folder. Name a new folder, or leave --model_dir out for a temporary one.")
  trained = _run([sys.executable, "-m", "shardline.launch.cli", "train", *gin_args,
                  f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={args.steps}"])
  if trained.returncode:
    raise SystemExit(f"shardline train failed (exit {trained.returncode})")
  r = summarise(model_dir, float(found[-1][1]))
  print("| run | images/s | vs synthetic | data-wait share | eval accuracy | checkpoints |")
  print("|---|---|---|---|---|---|")
  print(f"| synthetic batches (benchmarks.train_step) | {r['synthetic_images_per_s']:.1f} | 1.00 | - | - | - |")
  print(f"| shardline train, prepared JPEGs | {r['images_per_s']:.1f} | {r['ratio']:.2f} | "
        f"{r['data_wait_share']:.1%} | {r['eval_accuracy']:.4f} | {r['checkpoints']} |")
  return r


if __name__ == "__main__":
  main()
