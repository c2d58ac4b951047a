"""`shardline eval` / `python -m shardline.launch.eval`: evaluate a checkpoint from gin files."""
import argparse
import sys
from typing import Sequence

from shardline.launch import distributed
from shardline.launch import reporting
from shardline.launch import flags
from shardline.launch import runtime
from shardline.training.evaluation import evaluate


def build_parser(prog: str = "shardline eval") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description="Evaluate the latest (or a given) checkpoint with the "
                                   "run's evaluators (EVALUATORS in gin).")
  flags.add_gin_flags(parser)
  parser.add_argument("--evaluator", action="append", default=[], metavar="NAME",
                      help="Run only this evaluator of the configuration (e.g. fewshot); repeatable. Default: all.")
  distributed.add_flags(parser)
  return parser


def main(argv: Sequence[str] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv

  def run():
    args, overrides = flags.parse_args(build_parser(), argv)
    flags.parse_gin(args, overrides)
    runtime.configure()
    distributed.initialize(args)
    evaluate.evaluate(only=args.evaluator)
    return 0
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)


if __name__ == "__main__":
  sys.exit(main())
