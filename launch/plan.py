"""`shardline plan`: proves on a laptop that a configuration fits a TPU pod or GPU nodes, before paying for them.

  shardline plan --gin_file=experiments/vit22b_pod_v4.gin --topology=v4-1024 [--gin.X=Y ...]

Prints every parameter's shape, logical axes and mesh sharding (repeated layers collapsed), the memory per
device against its HBM, and the FLOPs, estimated step time and MFU of one step (labelled as estimates). Exits
with code 3 when the run does not fit.
"""
import argparse
import sys
from typing import Sequence

import jax

from shardline.launch import reporting
from shardline.launch import flags
from shardline.launch import plan_inputs
from shardline.launch.plan_inputs import plan_run
from shardline.launch import runtime
from shardline.training.planning import planner as planning
from shardline.training.planning import targets as targets_lib

DOES_NOT_FIT = 3


def main(argv: Sequence[str] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv

  def run():
    parser = argparse.ArgumentParser(prog="shardline plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_gin_flags(parser)
    parser.add_argument("--topology", required=True,
                        help="v3-128, v4-1024, v5p-256, v5litepod-64, v6e-256, v4:8x8x8, 8xH100")
    parser.add_argument("--quick", action="store_true",
                        help="compile with the least optimisation effort: 4-10x faster on TPU targets, memory "
                             "within a few percent, no step-time estimate")
    args, overrides = flags.parse_args(parser, argv)
    target = targets_lib.resolve(args.topology)
    paths = [p for entry in args.gin_search_paths for p in entry.split(",") if p]
    from shardline.launch import gin_config  # pylint: disable=g-import-not-at-top
    gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides), paths,
                     allow_missing=plan_inputs.PLAN_NEEDS_NO)
    # The plan never runs a step: it compiles for TPU topologies, and lays GPU runs out on CPU stand-ins.
    jax.config.update("jax_platforms", "cpu")
    # TPU programs compiled here cannot be loaded back by this CPU process, so caching them is waste.
    runtime.configure(cpu_devices=target.num_devices if target.platform == "gpu" else None,
                      compilation_cache_dir="" if target.platform == "tpu" else None)
    inputs = plan_run()
    result = planning.plan(inputs.model, inputs.batch_size, target, inputs.steps, inputs.microbatches,
                           quick=args.quick, distill=inputs.distill)
    print(planning.report(result))
    return 0 if result.fits else DOES_NOT_FIT
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)
