"""`shardline launch-local`: N processes on this machine, over the CPU gloo collectives.

  shardline launch-local --processes 2 --devices-per-process 4 -- train --gin_file=... --gin.MODEL_DIR=...

Rehearses a multi-host run on one machine: each process gets its own simulated CPU devices, the
--coordinator_address/--num_processes/--process_id flags, and a [pN] prefix on its output. If one process
fails the others are stopped, and the launcher exits with the first failure's code.
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
from typing import List, Sequence

from shardline.launch import errors
from shardline.partitioning.errors import UserError


def _free_port_pair() -> int:
  """A port p with p and p+1 free on 127.0.0.1 (jax's coordinator and shardline's rendezvous)."""
  for _ in range(50):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port + 1))
        return port
      except OSError:
        continue
  raise UserError("No two consecutive free ports on 127.0.0.1 for the local launch.")


def _pump(process: subprocess.Popen, prefix: str, stream) -> None:
  for line in process.stdout:
    stream.write(f"{prefix} {line}")
    stream.flush()


def build_commands(processes: int, devices_per_process: int, command: Sequence[str], port: int) -> List[List[str]]:
  """The argv of each process."""
  return [[sys.executable, "-m", "shardline.launch.cli", *command, f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={processes}", f"--process_id={i}", f"--gin.runtime.cpu_devices={devices_per_process}"]
          for i in range(processes)]


def main(argv: Sequence[str] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)

  def run():
    if "--" not in argv:
      raise UserError("Usage: shardline launch-local --processes N --devices-per-process D -- train <flags>")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="shardline launch-local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=4)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command or command[0] not in ("train", "eval"):
      raise UserError("launch-local runs `train` or `eval`: put the subcommand and its flags after --.")
    if args.processes < 1 or args.devices_per_process < 1:
      raise UserError("--processes and --devices-per-process must be at least 1.")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                for cmd in build_commands(args.processes, args.devices_per_process, command, _free_port_pair())]
    pumps = [threading.Thread(target=_pump, args=(p, f"[p{i}]", sys.stdout), daemon=True)
             for i, p in enumerate(children)]
    for t in pumps:
      t.start()
    code = 0
    remaining = list(children)
    while remaining:
      for p in list(remaining):
        if p.poll() is not None:
          remaining.remove(p)
          if p.returncode != 0 and code == 0:
            code = p.returncode
            for other in remaining:  # one failed: stop the rest instead of letting them wait for it
              other.terminate()
      threading.Event().wait(0.1)
    for t in pumps:
      t.join()
    return code if code >= 0 else 1
  return errors.run_reporting_user_errors(run)
