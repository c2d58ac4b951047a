"""`shardline launch-local`: N processes on this machine, over the CPU gloo collectives.

  shardline launch-local --processes 2 --devices-per-process 4 -- train --gin_file=... --gin.MODEL_DIR=...

Rehearses a multi-host run on one machine: each process gets its own simulated CPU devices, the
--coordinator_address/--num_processes/--process_id flags, and a [pN] prefix on its output. Every process's
whole output is also kept in `--log_dir` (a new temporary folder by default) as p<N>.log. If one process fails
the others are stopped, the last lines of every process are shown, and the launcher exits with the first
failure's code.
"""
import argparse
import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Deque, List, Sequence

from shardline.launch import reporting
from shardline.core import scratch
from shardline.core.errors import UserError
from shardline.training.lifecycle import preemption

TAIL_LINES = 30
# After one process fails, the others are stuck in collectives with it and cannot save: SIGTERM lets a process
# that is not stuck end cleanly, and SIGKILL follows soon.
STOP_GRACE_SECONDS = 3
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_launcher(launcher: int):
  """A Popen preexec_fn: the child gets SIGKILL when the launcher dies (Linux), and exits at once if it already
  has. Popen runs in this process's main thread, which lives as long as the launcher, so the signal is not sent
  early (Linux ties it to the thread that started the child)."""
  def preexec() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:
      os._exit(1)  # pylint: disable=protected-access
  return preexec


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


class _Child:
  """One process of the launch: its output goes to our stdout with a prefix, to its log file, and to a tail."""

  def __init__(self, index: int, argv: List[str], env: dict, log_path: str):
    self.index, self.log_path = index, log_path
    self.tail: Deque[str] = collections.deque(maxlen=TAIL_LINES)
    self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    preexec_fn=_die_with_launcher(os.getpid()))
    self._pump = threading.Thread(target=self._copy_output, daemon=True)
    self._pump.start()

  def _copy_output(self) -> None:
    with open(self.log_path, "w") as log:
      for line in self.process.stdout:
        log.write(line)
        log.flush()
        self.tail.append(line)
        sys.stdout.write(f"[p{self.index}] {line}")
        sys.stdout.flush()

  def join_output(self) -> None:
    self._pump.join()


def build_commands(processes: int, devices_per_process: int, command: Sequence[str], port: int) -> List[List[str]]:
  """The argv of each process."""
  return [[sys.executable, "-m", "shardline.launch.cli", *command, f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={processes}", f"--process_id={i}", f"--gin.runtime.cpu_devices={devices_per_process}"]
          for i in range(processes)]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="shardline launch-local", description=__doc__,
                                   usage="shardline launch-local [--processes N] [--devices-per-process D] "
                                         "[--log_dir DIR] -- train|eval <flags>",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, default=2, help="How many processes to start.")
  parser.add_argument("--devices-per-process", type=int, default=4, help="Simulated CPU devices per process.")
  parser.add_argument("--log_dir", default=None, help="Where p<N>.log keep each process's whole output "
                                                      "(a new temporary folder by default).")
  return parser


def _wait(children: List[_Child]) -> int:
  """Waits for every child; after the first failure stops the rest (SIGTERM, then SIGKILL after a grace period).
  Returns the first failure's code, or 0."""
  code, remaining, kill_at = 0, list(children), None
  while remaining:
    for child in list(remaining):
      if child.process.poll() is not None:
        remaining.remove(child)
        if child.process.returncode != 0 and code == 0:
          code = child.process.returncode
          if code == preemption.PREEMPTED_EXIT_CODE:
            continue  # saved at the step every process agreed on: the others are exiting the same way
          for other in remaining:  # one failed: stop the rest instead of letting them wait for it
            other.process.terminate()
          kill_at = time.monotonic() + STOP_GRACE_SECONDS
    if kill_at is not None and time.monotonic() > kill_at:
      for other in remaining:
        other.process.kill()
      kill_at = None
    time.sleep(0.1)
  return code


def _report_failure(children: List[_Child], code: int) -> None:
  lines = [f"shardline launch-local: a process failed (exit {code}); the others were stopped. "
           f"The last {TAIL_LINES} lines of each process follow; whole logs: "
           f"{os.path.dirname(children[0].log_path)}"]
  for child in children:
    returncode = child.process.returncode
    how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit {returncode}"
    lines.append(f"--- p{child.index} ({how}), {child.log_path}")
    lines.extend(line.rstrip("\n") for line in child.tail)
  print("\n".join(lines), file=sys.stderr)


def main(argv: Sequence[str] = None) -> int:
  """Starts the processes, relays their output, and returns the first failure's exit code (0 if none)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  ours = argv[:argv.index("--")] if "--" in argv else argv
  if "-h" in ours or "--help" in ours:
    parser.print_help()
    return 0

  def run():
    if "--" not in argv:
      raise UserError("Usage: shardline launch-local --processes N --devices-per-process D -- train <flags>. "
                      "Put the subcommand and its flags after --.")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command or command[0] not in ("train", "eval"):
      raise UserError("launch-local runs `train` or `eval`: put the subcommand and its flags after --.")
    if args.processes < 1 or args.devices_per_process < 1:
      raise UserError("--processes and --devices-per-process must be at least 1.")
    log_dir = args.log_dir or scratch.make_local_scratch("launch-local")
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    commands = build_commands(args.processes, args.devices_per_process, command, _free_port_pair())
    children = [_Child(i, cmd, env, os.path.join(log_dir, f"p{i}.log")) for i, cmd in enumerate(commands)]
    code = _wait(children)
    for child in children:
      child.join_output()
    if code and code != preemption.PREEMPTED_EXIT_CODE:
      _report_failure(children, code)
    return code if code >= 0 else 1
  return reporting.run_reporting_user_errors(run)
