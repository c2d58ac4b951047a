"""Preemption: on SIGTERM every process agrees on one step, saves it, and the run exits with PREEMPTED_EXIT_CODE.

Cloud TPU, GKE and SLURM send SIGTERM some seconds before they kill a job. One process may get it and the others
not, so the step to save at must be agreed:
- Under `jax.distributed` (every multi-process run) JAX's preemption sync manager catches SIGTERM in C++, tells
  the other processes through the coordination service, and `reached_preemption_sync_point(step)` turns True at
  the same step everywhere. It must be asked at every step with the same step numbers on every process, which
  the training loop does at each step boundary.
- A single process has nothing to agree with: a Python SIGTERM handler sets a flag that the loop reads.

A SIGTERM that arrives while the first step compiles, or during an evaluation, is held until the next step
boundary (JAX's handler and Python's both only record it), so the save happens as soon as the current work ends.
"""
import signal
import threading
from typing import Optional

import jax
from jax.experimental import multihost_utils

# sysexits.h's EX_TEMPFAIL: a temporary failure; the caller is invited to retry. Rerunning the same command
# resumes from the checkpoint saved at the agreed step.
PREEMPTED_EXIT_CODE = 75


class PreemptionWatch:
  """Tells the training loop at which step to save and stop after a SIGTERM.

  Use as a context manager around the run: in a single process it installs the SIGTERM handler on entry and
  restores the previous one on exit.
  """

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self._signalled = threading.Event()
    self._previous_handler = None
    self._multi_process = jax.process_count() > 1

  def __enter__(self) -> "PreemptionWatch":
    if self.enabled and not self._multi_process:
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    elif not self.enabled and self._multi_process:
      # jax.distributed's preemption notifier caught SIGTERM in C++; without saves SIGTERM ends the process again.
      self._previous_handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._signalled.set()

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop now; call once at every step boundary, on every process."""
    if not self.enabled:
      return False
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled.is_set()


def message(step: int, saved_at: Optional[int], checkpoint_dir: str) -> str:
  """The one line printed on the way out."""
  if saved_at is None:
    where = "no step was trained since the start, so nothing was saved"
  elif saved_at == step:
    where = f"checkpoint {step} is committed in {checkpoint_dir}"
  else:
    where = f"nothing changed since checkpoint {saved_at} in {checkpoint_dir}"
  return (f"shardline: preempted (SIGTERM) at step {step}; {where}. Exit {PREEMPTED_EXIT_CODE}: rerun the same "
          "command to resume.")
