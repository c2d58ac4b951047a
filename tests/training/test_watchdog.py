"""The hang watchdog: a stalled step makes every thread's stack appear on stderr and in MODEL_DIR/hangs/, once per
stall; 'abort' ends the run with exit 124; the timeout is validated."""
import os
import time

import pytest

from shardline.core.errors import UserError
from shardline.training.lifecycle import watchdog
from tests import helpers


def _stalled_step(dog: watchdog.Watchdog, until: int) -> None:
  """Stands still, as a hung collective would, until the watchdog has dumped `until` times (or 60 s pass)."""
  deadline = time.time() + 60
  while len(dog.dumps) < until and time.time() < deadline:
    time.sleep(0.05)


def test_a_stall_dumps_every_threads_stack_once_per_stall(tmp_path, capsys):
  aborted = []
  dog = watchdog.Watchdog(str(tmp_path / "hangs"), 3, hang_timeout_s=0.5, on_abort=aborted.append).start()
  try:
    dog.progress(step_done=True)
    _stalled_step(dog, until=1)
    time.sleep(1.5)  # still stalled: no second dump for the same stall
    assert len(dog.dumps) == 1
    dog.progress(step_done=True)
    _stalled_step(dog, until=2)  # a new stall after progress dumps again
  finally:
    dog.stop()
  assert len(dog.dumps) == 2 and not aborted
  text = open(dog.dumps[0]).read()
  assert text.startswith("shardline: no training progress for") and "on process 3" in text
  assert "_stalled_step" in text and "Thread MainThread" in text and "shardline-watchdog" in text
  assert os.path.basename(dog.dumps[0]).endswith("-p3.txt")
  assert "_stalled_step" in capsys.readouterr().err


def test_abort_ends_the_process_with_124_after_the_dump(tmp_path):
  aborted = []
  dog = watchdog.Watchdog(str(tmp_path / "hangs"), 0, hang_timeout_s=0.3, action="abort",
                          on_abort=aborted.append).start()
  try:
    _stalled_step(dog, until=1)
    deadline = time.time() + 30
    while not aborted and time.time() < deadline:
      time.sleep(0.05)
  finally:
    dog.stop()
  assert aborted == [watchdog.HUNG_EXIT_CODE] and len(dog.dumps) == 1


def test_the_automatic_timeout_has_a_floor():
  dog = watchdog.Watchdog("/unused", 0)
  assert dog.timeout() == watchdog.HANG_FLOOR_S
  assert watchdog.Watchdog("/unused", 0, hang_timeout_s=7).timeout() == 7


@pytest.mark.parametrize("timeout, action", [(-1, "dump"), (0, "dump"), (5, "explode")])
def test_bad_settings_are_user_errors(timeout, action):
  with pytest.raises(UserError):
    watchdog.check_settings(timeout, action)


@pytest.mark.full
def test_a_hung_training_run_dumps_and_aborts(tmp_path):
  model_dir = tmp_path / "run"
  # The timeout is far above a healthy step's gaps on a loaded machine: with 3 s, a run sharing the 2 cores with
  # two other test workers was taken for hung before it reached the injected stall.
  result = helpers.run_shardline(*helpers.tiny_train_args(model_dir, 6), "--gin.train.watchdog.timeout_s=20",
                                 "--gin.train.watchdog.action='abort'", "--gin.train.faults.stall=(2, 600)",
                                 timeout=300)
  assert result.returncode == watchdog.HUNG_EXIT_CODE, result.stdout[-2000:] + result.stderr[-2000:]
  assert "shardline: no training progress for" in result.stderr and "_stall_if_injected" in result.stderr
  dumps = os.listdir(model_dir / "hangs")
  assert len(dumps) == 1 and dumps[0].endswith("-p0.txt")
  assert "_stall_if_injected" in (model_dir / "hangs" / dumps[0]).read_text()
