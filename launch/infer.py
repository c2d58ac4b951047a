"""`shardline infer` / `python -m shardline.launch.infer`: a checkpoint's model-specific analysis."""
import argparse
import sys
from typing import Sequence

import jax

from shardline.launch import distributed
from shardline.launch import reporting
from shardline.launch import flags
from shardline.launch import runtime
from shardline.training.evaluation import infer


def main(argv: Sequence[str] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv

  def run():
    parser = argparse.ArgumentParser(prog="shardline infer", description=__doc__)
    flags.add_gin_flags(parser)
    distributed.add_flags(parser)
    args, overrides = flags.parse_args(parser, argv)
    flags.parse_gin(args, overrides)
    runtime.configure()
    distributed.initialize(args)
    result = infer.infer()
    if jax.process_index() == 0:
      print(f"Analysis of checkpoint step {result['step']} written to {result['output_dir']}")
    return 0
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)


if __name__ == "__main__":
  sys.exit(main())
