"""Runs the two-process test again and again while another test keeps both cores busy, and counts the passes.

  python -m benchmarks.multiprocess_repeat --runs 20 [--load tests/training/test_parity.py] [--out DIR]

A flaky multi-process run is a failing one; this is how its fix is checked. The load test runs in a loop in
the background for as long as the repeats take, so every repeat shares the machine with it. Each repeat's
pytest output is kept in OUT/run<N>.log; the summary line gives passes, failures and the time of each repeat.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = "tests/launch/test_multiprocess.py::test_two_processes_match_one_and_their_checkpoint_restores_in_one"


def _pytest(target: str, log_path: str) -> subprocess.Popen:
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target], cwd=REPO,
                          stdout=log, stderr=subprocess.STDOUT)


def _keep_loaded(load: str, out: str, stop: threading.Event) -> None:
  while not stop.is_set():
    process = _pytest(load, os.path.join(out, "load.log"))
    while process.poll() is None:
      if stop.wait(1.0):
        process.terminate()
        process.wait()
        return


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--load", default="tests/training/test_parity.py", help="The test that loads the cores.")
  parser.add_argument("--out", default=None, help="Folder for the logs (a new temporary one by default).")
  args = parser.parse_args()
  out = args.out or tempfile.mkdtemp(prefix="multiprocess-repeat-")
  os.makedirs(out, exist_ok=True)
  stop = threading.Event()
  loader = threading.Thread(target=_keep_loaded, args=(args.load, out, stop), daemon=True)
  loader.start()
  passed, seconds = 0, []
  try:
    for run in range(1, args.runs + 1):
      start = time.time()
      code = _pytest(TEST, os.path.join(out, f"run{run}.log")).wait()
      seconds.append(time.time() - start)
      passed += code == 0
      print(f"run {run}: {'pass' if code == 0 else f'FAIL (pytest exit {code})'} in {seconds[-1]:.0f}s",
            flush=True)
  finally:
    stop.set()
    loader.join()
  print(f"{passed} of {args.runs} passed under load from {args.load}; repeats took "
        f"{min(seconds):.0f}-{max(seconds):.0f}s; logs in {out}")
  return 0 if passed == args.runs else 1


if __name__ == "__main__":
  sys.exit(main())
