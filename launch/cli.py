"""The `shardline` command: subcommands train, eval (and the launchers, as they are added)."""
import sys
from typing import Callable, Dict, Sequence

from shardline.launch import convert as convert_main
from shardline.launch import prepare as data_main
from shardline.launch import eval as eval_main
from shardline.launch import infer as infer_main
from shardline.launch import local as local_main
from shardline.launch import plan as plan_main
from shardline.launch import slurm_script
from shardline.launch import tpu as tpu_main
from shardline.launch import train as train_main

COMMANDS: Dict[str, Callable[[Sequence[str]], int]] = {
    "train": train_main.main,
    "eval": eval_main.main,
    "infer": infer_main.main,
    "data": data_main.main,
    "plan": plan_main.main,
    "launch-local": local_main.main,
    "slurm": slurm_script.main,
    "tpu": tpu_main.main,
    "convert": convert_main.main,
}

USAGE = """usage: shardline <command> [flags]

commands:
  train   train a model:           shardline train --gin_file=experiments/vit22b_tiny_digits_cpu8.gin \\
                                       --gin.MODEL_DIR="'/tmp/run'"
  eval    evaluate a checkpoint:   shardline eval --gin_file=<same files> --gin.MODEL_DIR="'/tmp/run'"
  plan    will it fit a pod?       shardline plan --gin_file=experiments/vit22b_pod_v4.gin --topology=v4-1024
  data    prepare a task's splits: shardline data prepare --gin_file=experiments/vit22b_pod_v4.gin
  infer   a checkpoint's analysis: shardline infer --gin_file=<same files> --gin.MODEL_DIR="'/tmp/run'"
  launch-local  N processes on this machine (a multi-host rehearsal over gloo):
                                   shardline launch-local --processes 2 --devices-per-process 4 -- train ...
  slurm   an sbatch script:        shardline slurm --nodes 2 --gpus-per-node 8 --per gpu -- train ...
  tpu     Cloud TPU pods:          shardline tpu create|wait|install|train|logs|delete --name ... [--dry_run]
  convert ViT weights in and out:  shardline convert import|export --from=hf|timm|big_vision / --to=hf|timm|serving

Run `shardline <command> --help` for a command's flags.
"""


def main(argv: Sequence[str] = None) -> int:
  """Dispatches to a subcommand."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"shardline: error: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
    return 2
  return COMMANDS[command](rest)


if __name__ == "__main__":
  sys.exit(main())
