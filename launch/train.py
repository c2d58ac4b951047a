"""`shardline train` / `python -m shardline.launch.train`: gin-configured training."""
import argparse
import sys
from typing import Sequence

import jax


from shardline.launch import distributed
from shardline.launch import reporting
from shardline.launch import flags
from shardline.launch import runtime
from shardline.training.lifecycle import preemption
from shardline.training.loop import trainer


def build_parser(prog: str = "shardline train") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description="Train a model configured by gin files.")
  flags.add_gin_flags(parser)
  distributed.add_flags(parser)
  return parser


def print_summary(summary: dict) -> None:
  """The end-of-run summary: accuracy, steps, wall time, and where the outputs are."""
  ev, tr = summary.get("eval", {}), summary.get("train", {})
  lines = ["", "=" * 72, "Training finished"]
  width = max([15] + [len(key) for key in ev])
  lines.append(f"  {'steps':<{width}} {summary['step']}  (skipped non-finite updates: {summary['skipped']})")
  for key, value in ev.items():
    shown = f"{100 * value:.2f}%" if key.endswith("accuracy") else f"{value:.4f}"
    lines.append(f"  {key.replace('_', ' '):<{width}} {shown}")
  if "loss" in tr:
    lines.append(f"  {'train loss':<{width}} {tr['loss']:.4g}")
  lines.append(f"  {'wall time':<{width}} {summary['wall_seconds']:.1f} s")
  lines.append(f"  {'MODEL_DIR':<{width}} {summary['model_dir']}")
  lines.append(f"  {'checkpoints':<{width}} {summary['checkpoints']}")
  lines.append(f"  {'TensorBoard':<{width}} tensorboard --logdir {summary['model_dir']}")
  lines.append("=" * 72)
  print("\n".join(lines))


def main(argv: Sequence[str] = None) -> int:
  """Parses flags and gin, configures the runtime, trains, and prints a summary."""
  argv = sys.argv[1:] if argv is None else argv

  def run():
    args, overrides = flags.parse_args(build_parser(), argv)
    flags.parse_gin(args, overrides)
    runtime.configure()
    distributed.initialize(args)
    summary = trainer.train()
    if summary["preempted_at"] is not None:
      if jax.process_index() == 0:
        print(preemption.message(summary["preempted_at"], summary["saved_at"], summary["checkpoints"]))
      return preemption.PREEMPTED_EXIT_CODE
    if jax.process_index() == 0:
      print_summary(summary)
    return 0
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)


if __name__ == "__main__":
  sys.exit(main())
