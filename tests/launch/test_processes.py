"""No process outlives its run: a training run killed with SIGKILL takes its grain workers and multiprocessing's
resource tracker with it, and so does a `launch-local` run when one of its processes is killed."""
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests import helpers

pytestmark = pytest.mark.full
GONE_WITHIN_S = 10.0


def _wait_for(predicate, timeout: float, what: str):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.2)
  raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(processes):
  alive = []
  for process in processes:
    try:
      if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
        alive.append(process)
    except psutil.NoSuchProcess:
      continue
  return alive


def _grain_workers(root: psutil.Process):
  return [p for p in root.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def _start(args, tmp_path):
  log = open(tmp_path / "run.log", "w")  # pylint: disable=consider-using-with
  return subprocess.Popen(helpers.shardline_command(*args), stdout=log, stderr=subprocess.STDOUT,
                          env=helpers.subprocess_env(), cwd=helpers.REPO)


def test_a_killed_run_leaves_no_worker_behind(tmp_path):
  run = _start(helpers.tiny_train_args(tmp_path / "run", 100000, "--gin.stream.workers=2"), tmp_path)
  try:
    root = psutil.Process(run.pid)
    _wait_for(lambda: "step 1 |" in (tmp_path / "run.log").read_text(), 300, "the first step")
    workers = _grain_workers(root)
    descendants = root.children(recursive=True)
    assert any("resource_tracker" in " ".join(p.cmdline()) for p in descendants)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(30)
    _wait_for(lambda: not _alive(descendants), GONE_WITHIN_S, f"{len(descendants)} children to exit")
    assert len(workers) == 2
  finally:
    if run.poll() is None:
      run.kill()
      run.wait()


def test_a_launch_local_process_killed_takes_the_whole_launch_down(tmp_path):
  launch = _start(("launch-local", "--processes", "2", "--devices-per-process", "4", "--log_dir",
                   str(tmp_path / "logs"), "--", *helpers.tiny_train_args(tmp_path / "run", 100000,
                                                                          "--gin.stream.workers=1")), tmp_path)
  try:
    root = psutil.Process(launch.pid)
    _wait_for(lambda: "[p0] step 1 |" in (tmp_path / "run.log").read_text(), 300, "the first step")
    trainers = root.children()
    assert len(trainers) == 2 and all(_grain_workers(p) for p in trainers)
    everything = [root] + root.children(recursive=True)
    os.kill(trainers[1].pid, signal.SIGKILL)
    _wait_for(lambda: not _alive(everything), GONE_WITHIN_S, "the launcher, the other process and the workers")
    assert launch.wait(5) != 0
  finally:
    if launch.poll() is None:
      launch.kill()
      launch.wait()


def test_killing_the_launcher_takes_its_processes_down(tmp_path):
  launch = _start(("launch-local", "--processes", "2", "--devices-per-process", "4", "--log_dir",
                   str(tmp_path / "logs"), "--", *helpers.tiny_train_args(tmp_path / "run", 100000)), tmp_path)
  try:
    root = psutil.Process(launch.pid)
    _wait_for(lambda: len(root.children()) == 2, 120, "two processes")
    everything = [root] + root.children(recursive=True)
    os.kill(launch.pid, signal.SIGKILL)
    launch.wait(10)
    _wait_for(lambda: not _alive(everything), GONE_WITHIN_S, "the launched processes")
  finally:
    if launch.poll() is None:
      launch.kill()
      launch.wait()
