"""`shardline slurm`: writes (or prints) an sbatch script from launch/slurm/train.sbatch.

  shardline slurm --nodes 2 --gpus-per-node 8 --per gpu [--output job.sbatch] -- train --gin_file=... ...

Every argument after `--` is quoted for the shell exactly once, so `--gin.MODEL_DIR="'/path'"` reaches
shardline with the inner quotes that gin needs.
"""
import argparse
import os
import sys
from typing import Sequence

from shardline.launch import reporting
from shardline.launch import quoting
from shardline.core.errors import UserError

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm", "train.sbatch")


def render(command: Sequence[str], nodes: int, gpus_per_node: int, per: str, job_name: str = "shardline",
           time: str = "24:00:00", output: str = "shardline-%j.log", setup: str = "",
           extra_sbatch: Sequence[str] = ()) -> str:
  """The sbatch script text."""
  if per not in ("gpu", "node"):
    raise UserError(f"--per {per!r}: choose 'gpu' (one process per GPU) or 'node' (one per node).")
  if nodes < 1 or gpus_per_node < 1:
    raise UserError("--nodes and --gpus-per-node must be at least 1.")
  tasks_per_node = gpus_per_node if per == "gpu" else 1
  shell_command = quoting.join(["shardline", *command])
  with open(TEMPLATE) as f:
    template = f.read()
  return template.format(job_name=job_name, nodes=nodes, tasks_per_node=tasks_per_node,
                         gpus_per_node=gpus_per_node, time=time, output=output,
                         extra_sbatch="\n".join(f"#SBATCH {line}" for line in extra_sbatch),
                         setup=setup, gpus_per_task="--gpus-per-task=1 " if per == "gpu" else "",
                         command=shell_command)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="shardline slurm", description=__doc__,
                                   usage="shardline slurm --nodes N [--gpus-per-node G] [--per gpu|node] [...] "
                                         "-- train <flags>",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nodes", type=int, required=True)
  parser.add_argument("--gpus-per-node", type=int, default=8)
  parser.add_argument("--per", default="gpu", choices=("gpu", "node"))
  parser.add_argument("--job-name", default="shardline")
  parser.add_argument("--time", default="24:00:00")
  parser.add_argument("--log", default="shardline-%j.log", help="SLURM --output file")
  parser.add_argument("--setup", default="", help="shell lines run before srun (modules, venv activation)")
  parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH lines, e.g. --partition=gpu")
  parser.add_argument("--output", default=None, help="write the script here instead of printing it")
  return parser


def main(argv: Sequence[str] = None) -> int:
  """Writes or prints the sbatch script; `--help` prints the flags."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  if {"-h", "--help"} & set(argv[:argv.index("--")] if "--" in argv else argv):
    parser.print_help()
    return 0

  def run():
    if "--" not in argv:
      raise UserError("Usage: shardline slurm --nodes N --gpus-per-node G --per gpu|node -- train <flags>")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    text = render(argv[split + 1:], args.nodes, args.gpus_per_node, args.per, args.job_name, args.time, args.log,
                  args.setup, args.sbatch)
    if args.output:
      if os.path.exists(args.output):
        raise UserError(f"{args.output} exists; shardline does not overwrite it. Choose another --output.")
      with open(args.output, "w") as f:
        f.write(text)
      print(f"Wrote {args.output}; submit it with: sbatch {args.output}")
    else:
      sys.stdout.write(text)
    return 0
  return reporting.run_reporting_user_errors(run)
