"""Multi-process start-up: explicit flags, or automatic on Cloud TPU pods and under SLURM.

One process runs per host (or per GPU). Explicitly: --coordinator_address=HOST:PORT --num_processes=N
--process_id=I on every process; the coordinator service binds to exactly that address. On a Cloud TPU pod or
in a SLURM allocation with several tasks, jax finds the peers itself. On CPU the processes talk over gloo.
"""
import argparse
import os

import jax

from shardline.launch import rendezvous
from shardline.core.errors import UserError


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The distributed flags of every entry point."""
  group = parser.add_argument_group("multi-process")
  group.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0 (explicit start-up).")
  group.add_argument("--num_processes", type=int, default=None, help="How many processes in all.")
  group.add_argument("--process_id", type=int, default=None, help="This process's index, 0..num_processes-1.")
  group.add_argument("--distributed_timeout", type=float, default=300.0,
                     help="Seconds to wait for every process to join before stopping with an error.")


def _automatic() -> bool:
  """A multi-host Cloud TPU slice or a SLURM job with several tasks: jax finds its peers itself."""
  tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
  return "," in tpu_hosts or (bool(os.environ.get("SLURM_JOB_ID")) and slurm_tasks > 1)


def initialize(args: argparse.Namespace) -> None:
  """Starts jax's distributed runtime when this is a multi-process run; does nothing otherwise."""
  explicit = [args.coordinator_address, args.num_processes, args.process_id]
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    raise UserError("Pass all of --coordinator_address, --num_processes and --process_id, or none of them.")
  timeout = int(args.distributed_timeout)
  if args.coordinator_address is not None:
    if args.num_processes == 1:
      return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only the CPU backend reads it
    rendezvous.meet(args.coordinator_address, args.num_processes, args.process_id, timeout)
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                               initialization_timeout=timeout, coordinator_bind_address=args.coordinator_address)
    if jax.default_backend() == "cpu":
      # Measured here: when one CPU process loads a step from the persistent compilation cache and its peer
      # compiles it afresh, gloo sees mismatched collectives and aborts. Multi-process CPU runs compile anew.
      jax.config.update("jax_enable_compilation_cache", False)
  elif _automatic():
    jax.distributed.initialize(initialization_timeout=timeout)
