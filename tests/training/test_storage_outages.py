"""Storage outages against real servers on 127.0.0.1: a store that throttles (503 SlowDown) or stalls (SIGSTOP) is
waited for and training is unchanged; a store that dies stops the run within train.storage.timeout_s with one
paragraph and exit 69; restarted on the same data, the same command resumes exactly; and a local disk that
fills up (a small tmpfs) is handled the same way."""
import os
import re
import shutil
import subprocess
import time

import pytest

from shardline.training.lifecycle import storage
from tests import helpers
from tests import storage_servers

# One worker runs this module, so its module-scoped run is made once (pytest-xdist's loadgroup).
pytestmark = [pytest.mark.full, pytest.mark.xdist_group("storage_outages")]
STEPS = 9
TIMEOUT_S = 8  # train.storage.timeout_s in these runs
# Past the storage timeout a run may still wait for one request's timeout (core/store_clients.py) and for its
# own start-up; an unbounded wait would show up as far more.
STOP_BOUND_S = TIMEOUT_S + 90
E_LINE = re.compile(r"^E\d{4} ", re.M)  # an absl ERROR line (C++ libraries: TensorStore's AWS client, ...)


def _args(model_dir, *extra):
  return helpers.tiny_train_args(model_dir, STEPS, f"--gin.train.storage.timeout_s={TIMEOUT_S}", *extra)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The losses of the same run on a local disk, untroubled."""
  model_dir = tmp_path_factory.mktemp("reference") / "run"
  result = helpers.run_shardline(*_args(model_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return helpers.train_losses(model_dir)


class _Run:
  """A `shardline train` in a subprocess whose output is read line by line, so the test can act at a step."""

  def __init__(self, args, env, cwd):
    self.process = subprocess.Popen(helpers.shardline_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=helpers.subprocess_env(env), cwd=cwd)
    self.lines = []

  def until(self, prefix: str) -> None:
    for line in self.process.stdout:
      self.lines.append(line)
      if line.startswith(prefix):
        return
    raise AssertionError(f"the run ended before {prefix!r}:\n" + "".join(self.lines)[-3000:] +
                         self.process.stderr.read()[-3000:])

  def finish(self, timeout: float):
    out, err = self.process.communicate(timeout=timeout)
    self.lines.append(out)
    return self.process.returncode, "".join(self.lines), err


def _bucket_losses(env, prefix):
  import json  # pylint: disable=g-import-not-at-top
  text = storage_servers.read_object(env, f"{prefix}/metrics/train.jsonl")
  losses = {}
  for line in text.splitlines():
    row = json.loads(line)
    losses[row["step"]] = row["loss"]
  return losses


def _check_stop(code, err, started, where):
  assert code == storage.STORAGE_EXIT_CODE, err[-3000:]
  assert time.monotonic() - started < STOP_BOUND_S
  message = err.strip().splitlines()[-1]
  assert message.startswith("shardline: error: ") and where in message, err[-3000:]
  assert f"longer than train.storage.timeout_s = {TIMEOUT_S} s" in message
  assert "Traceback" not in err and "cannot schedule new futures" not in err and "never awaited" not in err, err
  return message


def test_throttled_stalled_then_dead_s3(tmp_path, uninterrupted):
  """Through a proxy that answers the 20 requests after step 2 with 503 SlowDown (more than s3fs and botocore retry
  per request, so the run's own outage handling retries, in one line), then with the server stopped for 25 s
  after step 4 (longer than a request's read timeout), the run goes on with unchanged losses; killed after step
  7, the server takes the run down within the storage timeout, exit 69, with one paragraph."""
  server = storage_servers.Server("s3").start()
  proxy = storage_servers.ThrottlingProxy(server)
  model_dir = f"s3://{storage_servers.BUCKET}/runs/outage"
  try:
    # Synchronous saves: checkpoint 6 is committed before step 7 starts, so the message can be checked exactly.
    run = _Run(_args(model_dir, "--gin.train.checkpointing.async_save=False"), proxy.env, tmp_path)
    run.until("step 2 |")
    proxy.throttle(20)
    run.until("step 4 |")
    server.pause()
    time.sleep(25)
    server.resume()
    run.until("step 7 |")
    losses = _bucket_losses(server.env, "runs/outage")
    server.kill()
    started = time.monotonic()
    code, out, err = run.finish(timeout=STOP_BOUND_S + 60)
  finally:
    proxy.stop()
    server.stop()
  assert proxy.throttled_requests == 20
  message = _check_stop(code, err, started, f"the bucket of MODEL_DIR {model_dir} stopped answering")
  assert "The last committed checkpoint is step 6;" in message, message
  assert "Rerun the same command to resume once the store answers" in message
  throttled = re.search(r"is not answering \(since step 2, .*reduce your request rate.*\n.*answers again after", out)
  assert throttled and out.count("is not answering (since step") >= 2, out[-3000:]  # the throttle, the kill
  assert {s: losses[s] for s in range(1, 8)} == {s: uninterrupted[s] for s in range(1, 8)}
  assert not E_LINE.search(err), err[-3000:]


def test_a_dead_gcs_emulator_stops_the_run_and_the_resume_after_it_returns_is_exact(tmp_path, uninterrupted):
  """The emulator keeps its objects on disk; it is stalled after step 2, then killed after step 5 while a save may
  be in flight. Started again on the same data, the same command resumes from the last committed checkpoint, and
  every loss equals the uninterrupted run's."""
  server = storage_servers.Server("gs", str(tmp_path / "gcs_data")).start()
  model_dir = f"gs://{storage_servers.BUCKET}/runs/outage"
  args = _args(model_dir)
  try:
    run = _Run(args, server.env, tmp_path)
    run.until("step 2 |")
    server.pause()
    time.sleep(25)
    server.resume()
    run.until("step 5 |")
    server.kill()
    started = time.monotonic()
    code, _, err = run.finish(timeout=STOP_BOUND_S + 60)
    message = _check_stop(code, err, started, f"the bucket of MODEL_DIR {model_dir} stopped answering")
    server.start()  # the same port and data
    # In a bucket orbax commits a step by writing commit_success.txt last: a step without it is not a checkpoint.
    committed = sorted(int(n.split("/")[3]) for n in storage_servers.list_objects(server.env, "runs/outage/checkpoints/")
                       if n.endswith("/commit_success.txt") and n.count("/") == 4)
    named = re.search(r"The last committed checkpoint is step (\d+)", message)
    in_flight = re.search(r"Step (\d+) was being saved.*known to be committed is (step (\d+)|none)", message)
    resumed = helpers.run_shardline(*args, env=server.env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if committed:  # the message named it, or the save in flight that turned out complete
      assert (named and int(named.group(1)) == committed[-1]) or (in_flight and int(in_flight.group(1)) == committed[-1]), (
          message, committed)
      assert f"Resuming from checkpoint step {committed[-1]}" in resumed.stdout
    else:  # nothing committed: the message says so, and the resume starts afresh
      assert "No checkpoint of this run was committed yet" in message or (in_flight and in_flight.group(2) == "none"), (
          message, committed)
      assert "Starting from scratch" in resumed.stdout
    losses = _bucket_losses(server.env, "runs/outage")
  finally:
    server.stop()
  assert losses == uninterrupted


def test_a_full_local_disk_stops_the_run_and_the_resume_after_space_is_freed_is_exact(tmp_path, uninterrupted):
  """MODEL_DIR on a 12 MiB tmpfs (this test mounts one; it needs root, which CI has); after step 4 a file fills
  the disk, so the next checkpoint cannot be written."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], capture_output=True,
                           text=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); CI runs as root and can")
  try:
    model_dir = disk / "run"
    # Synchronous saves: checkpoint 3 is committed before step 4, when the disk is filled.
    args = _args(model_dir, "--gin.train.checkpointing.async_save=False")
    run = _Run(args, {}, tmp_path)
    run.until("step 4 |")
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing it has nothing left to write
      try:
        while True:
          f.write(b"\0" * (1 << 20))
      except OSError:
        pass  # the disk is full
    started = time.monotonic()
    code, out, err = run.finish(timeout=STOP_BOUND_S + 60)
    message = _check_stop(code, err, started, f"the disk of MODEL_DIR {model_dir} is full")
    assert "Free space on that disk" in message and "is full (since step" in out
    assert "The last committed checkpoint is step 3" in message, message
    filler.unlink()
    resumed = helpers.run_shardline(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from checkpoint step 3" in resumed.stdout
    assert helpers.train_losses(model_dir) == uninterrupted
    shutil.copytree(model_dir, tmp_path / "kept")
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)
