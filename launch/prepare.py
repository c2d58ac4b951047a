"""`shardline data prepare`: write a run's task splits as ArrayRecord shards with a manifest (data/prepare.py).

  shardline data prepare --gin_file=experiments/vit22b_pod_v4.gin [--split=train] [--num_shards=1024]

The task and splits come from the run's gin files (gin/runs/train.gin binds `prepare_data.task` to TASK and
`prepare_data.splits` to the training split and EVAL_SPLIT); the cache root is stream.cache_dir. Re-running
finishes a prepare that was killed and checks one that is complete.
"""
import argparse
import sys
import time
from typing import Optional, Sequence

import gin

from shardline.core.errors import UserError
from shardline.data import prepared
from shardline.data.settings import StreamSettings
from shardline.launch import flags
from shardline.launch import reporting
from shardline.tasks import splits as splits_lib


@gin.configurable("prepare_data", module="data", denylist=["only", "num_shards", "workers"])
def prepare_data(task: str = gin.REQUIRED, splits: Sequence[str] = gin.REQUIRED, only: Sequence[str] = (),
                 num_shards: Optional[int] = None, workers: Optional[int] = None) -> None:
  """Prepares the task's splits (or only those named) under stream.cache_dir, printing a line per split."""
  settings = StreamSettings()
  for split in only or list(dict.fromkeys(splits)):
    start = time.time()
    done_before = splits_lib.is_prepared(task, split, settings)
    directory = splits_lib.prepare_split(task, split, settings, num_shards, workers)
    source = prepared.PreparedSource(directory)
    state = "already prepared, shards checked" if done_before else f"prepared in {time.time() - start:.1f} s"
    print(f"{task}/{split}: {source.describe()} ({state})")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="shardline data prepare",
                                   description="Write a run's task splits as ArrayRecord shards with a manifest.")
  flags.add_gin_flags(parser)
  parser.add_argument("--split", action="append", default=[],
                      help="A split to prepare (repeatable); by default the run's training and evaluation splits.")
  parser.add_argument("--num_shards", type=int, default=None,
                      help="Shards per split; by default one per 20,000 examples.")
  parser.add_argument("--workers", type=int, default=None, help="Shards written at once; by default the cores.")
  return parser


def main(argv: Sequence[str] = None) -> int:
  """`shardline data prepare ...`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] != "prepare":
    asked = bool(argv) and argv[0] in ("-h", "--help")
    print("usage: shardline data prepare --gin_file=<experiment>.gin [--split=NAME] [--num_shards=N]\n\n"
          "Writes a run's task splits as ArrayRecord shards under stream.cache_dir; "
          "`shardline data prepare --help` lists the flags.", file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2

  def run():
    from shardline.launch import gin_config  # pylint: disable=g-import-not-at-top
    args, overrides = flags.parse_args(build_parser(), argv[1:])
    paths = [p for entry in args.gin_search_paths for p in entry.split(",") if p]
    gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides), paths, allow_missing=("MODEL_DIR",))
    if args.num_shards is not None and args.num_shards < 1:
      raise UserError(f"--num_shards = {args.num_shards}; it must be a positive integer.")
    prepare_data(only=args.split, num_shards=args.num_shards, workers=args.workers)
    return 0
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)
