"""The hang watchdog: when training makes no progress for too long, every process dumps all its threads' stacks.

A hung collective, a stuck input pipeline or a dead peer shows up as a step that never ends; on a pod every
process then waits silently. The watchdog runs in a thread of each process. The training loop reports progress
(every step, evaluation batch and checkpoint); when none comes within the timeout, the watchdog writes every
thread's Python stack to stderr and to MODEL_DIR/hangs/<time>-p<process>.txt, once per stall. With action
'abort' it then ends the process with HUNG_EXIT_CODE instead of waiting on.

The timeout is `hang_timeout_s` when set; otherwise HANG_MULTIPLE times the median step time so far, and never
less than HANG_FLOOR_S (so a slow first evaluation or a checkpoint is not taken for a hang).
"""
import datetime
import os
import statistics
import sys
import threading
import time
import traceback
from typing import Callable, List, Optional

from shardline.core import paths
from shardline.core.errors import UserError

HANG_MULTIPLE = 20
HANG_FLOOR_S = 600.0
HUNG_EXIT_CODE = 124  # as `timeout` exits
ACTIONS = ("dump", "abort")
_RECENT_STEPS = 200


def check_settings(hang_timeout_s: Optional[float], action: str) -> None:
  """Stops on a timeout that is not positive or an unknown action."""
  if hang_timeout_s is not None and not hang_timeout_s > 0:
    raise UserError(f"train.watchdog.timeout_s = {hang_timeout_s}; it must be a positive number of seconds, or None "
                    f"for the automatic timeout ({HANG_MULTIPLE} x the median step time, at least "
                    f"{HANG_FLOOR_S:.0f} s).")
  if action not in ACTIONS:
    raise UserError(f"train.watchdog.action = {action!r}; choose one of {ACTIONS}.")


def all_stacks() -> str:
  """Every thread's current Python stack, named."""
  names = {t.ident: t.name for t in threading.enumerate()}
  parts = []
  for ident, frame in sys._current_frames().items():  # pylint: disable=protected-access
    parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n" + "".join(traceback.format_stack(frame)))
  return "\n".join(parts)


class Watchdog:
  """Watches for progress; see the module docstring."""

  def __init__(self, dump_dir: str, process_index: int, hang_timeout_s: Optional[float] = None,
               action: str = "dump", on_abort: Callable[[int], None] = os._exit):  # pylint: disable=protected-access
    check_settings(hang_timeout_s, action)
    self.dump_dir, self.process_index = dump_dir, process_index
    self.fixed_timeout, self.action, self._on_abort = hang_timeout_s, action, on_abort
    self._step_seconds: List[float] = []
    self._last = time.monotonic()
    self._last_step: Optional[float] = None
    self._dumped_this_stall = False
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="shardline-watchdog", daemon=True)
    self.dumps: List[str] = []

  def timeout(self) -> float:
    """Seconds without progress that count as a hang."""
    if self.fixed_timeout is not None:
      return self.fixed_timeout
    with self._lock:
      median = statistics.median(self._step_seconds) if self._step_seconds else 0.0
    return max(HANG_FLOOR_S, HANG_MULTIPLE * median)

  def start(self) -> "Watchdog":
    self._last = time.monotonic()
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()

  def progress(self, step_done: bool = False) -> None:
    """Reports progress; `step_done` marks the end of a training step (its duration feeds the median)."""
    now = time.monotonic()
    with self._lock:
      if step_done:
        if self._last_step is not None:
          self._step_seconds = (self._step_seconds + [now - self._last_step])[-_RECENT_STEPS:]
        self._last_step = now
      self._last = now
      self._dumped_this_stall = False

  def _watch(self) -> None:
    while not self._stop.wait(min(1.0, self.timeout() / 4)):
      timeout = self.timeout()
      with self._lock:
        idle = time.monotonic() - self._last
        due = idle > timeout and not self._dumped_this_stall
        if due:
          self._dumped_this_stall = True
      if due:
        self._dump(idle)
        if self.action == "abort":
          self._on_abort(HUNG_EXIT_CODE)

  def _dump(self, idle: float) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = paths.join(self.dump_dir, f"{stamp}-p{self.process_index}.txt")
    then = "aborting the run" if self.action == "abort" else "waiting on"
    header = (f"shardline: no training progress for {idle:.0f} s (hang timeout {self.timeout():.0f} s) on process "
              f"{self.process_index}; every thread's stack follows, also in {path}; {then}.")
    text = f"{header}\n{all_stacks()}"
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    try:
      paths.write_text(path, text)
      self.dumps.append(path)
    except Exception as e:  # pylint: disable=broad-except  # a dump that cannot be stored is still on stderr
      sys.stderr.write(f"shardline: could not write the hang dump to {path}: {e}\n")
