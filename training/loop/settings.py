"""The grouped settings `train` reads from gin, besides its own parameters: checkpointing, storage, profiles,
the hang watchdog and fault injection. Each group is one gin configurable under `train.`:

  train.checkpointing.keep = 5              train.profile.steps = (100, 5)
  train.storage.timeout_s = 600             train.watchdog.timeout_s = 1800

`RENAMED` is the one list of the gin names that moved into the groups on 2026-12-04 (docs/gin.md shows it under
"Renamed gin names"): a gin file or flag that still uses an old name stops with an error that names the new one.
"""
import dataclasses
from typing import Optional, Sequence

import gin

from shardline.core.errors import UserError
from shardline.training.lifecycle import profiling
from shardline.training.lifecycle import storage
from shardline.training.lifecycle import watchdog

# Old gin name -> new gin name, for every parameter that moved out of `train` into a group (2026-12-04).
RENAMED = {
    "train.keep_checkpoints": "train.checkpointing.keep",
    "train.async_checkpoints": "train.checkpointing.async_save",
    "train.save_on_preemption": "train.checkpointing.save_on_preemption",
    "train.profile_steps": "train.profile.steps",
    "train.profile_every_process": "train.profile.every_process",
    "train.hang_timeout_s": "train.watchdog.timeout_s",
    "train.hang_action": "train.watchdog.action",
    "train.inject_nan_at_step": "train.faults.nan_at_step",
    "train.inject_stall": "train.faults.stall",
    "train.storage_timeout_s": "train.storage.timeout_s",
    "train.eval_split": "evaluators.split_eval.split",
    "evaluate.split": "evaluators.split_eval.split",
}


@gin.configurable("checkpointing", module="train")
@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  """How checkpoints are kept and written (their cadence is train.checkpoint_every).

  Attributes:
    keep: how many checkpoints to keep.
    async_save: save in the background while training continues.
    save_on_preemption: on SIGTERM, agree on a step across processes, save it, and exit with code 75
      (training/lifecycle/preemption.py).
  """
  keep: int = 3
  async_save: bool = True
  save_on_preemption: bool = True

  def __post_init__(self):
    if self.keep < 1:
      raise UserError(f"train.checkpointing.keep = {self.keep}; keep at least 1 checkpoint.")


@gin.configurable("storage", module="train")
@dataclasses.dataclass(frozen=True)
class StorageSettings:
  """How long a run waits for MODEL_DIR's store to answer again (training/lifecycle/storage.py).

  Attributes:
    timeout_s: seconds a write to MODEL_DIR may keep failing (or hang) before the run stops with
      storage.STORAGE_EXIT_CODE and says which checkpoint is the last committed one.
  """
  timeout_s: float = storage.DEFAULT_TIMEOUT_S

  def __post_init__(self):
    if not self.timeout_s > 0:
      raise UserError(f"train.storage.timeout_s = {self.timeout_s}; it must be a positive number of seconds.")


@gin.configurable("profile", module="train")
@dataclasses.dataclass(frozen=True)
class ProfileSettings:
  """XProf traces of chosen steps (training/lifecycle/profiling.py).

  Attributes:
    steps: (first step, number of steps) to trace into MODEL_DIR/plugins/profile; None traces nothing.
    every_process: trace on every process instead of process 0 only.
  """
  steps: Optional[Sequence[int]] = None
  every_process: bool = False


@gin.configurable("watchdog", module="train")
@dataclasses.dataclass(frozen=True)
class HangSettings:
  """The hang watchdog (training/lifecycle/watchdog.py).

  Attributes:
    timeout_s: seconds without progress before every process dumps its threads' stacks to stderr and
      MODEL_DIR/hangs/; None: 20 x the median step time, at least 600 s.
    action: 'dump' (and keep waiting) or 'abort' (exit with code 124 after the dump).
  """
  timeout_s: Optional[float] = None
  action: str = "dump"

  def __post_init__(self):
    watchdog.check_settings(self.timeout_s, self.action)


@gin.configurable("faults", module="train")
@dataclasses.dataclass(frozen=True)
class FaultInjection:
  """Faults injected on purpose, for the tests of the non-finite policy, the watchdog and preemption.

  Attributes:
    nan_at_step: the loss becomes NaN at this step; -1 disables it.
    stall: (step, seconds) stops the host before that step; (step, seconds, 'eval') before the evaluation after
      it, as a hung collective would.
  """
  nan_at_step: int = -1
  stall: Optional[Sequence] = None

  def stall_point(self) -> Optional[tuple]:
    """(step, seconds, 'step' or 'eval'), or None."""
    return (tuple(self.stall) + ("step",))[:3] if self.stall else None


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Every group, built from gin when a run starts."""
  checkpointing: CheckpointSettings
  storage: StorageSettings
  profile: ProfileSettings
  watchdog: HangSettings
  faults: FaultInjection

  @classmethod
  def from_gin(cls, steps: int) -> "RunSettings":
    """The groups as gin binds them, checked against the run's length."""
    settings = cls(CheckpointSettings(), StorageSettings(), ProfileSettings(), HangSettings(), FaultInjection())
    profiling.check_steps(settings.profile.steps, steps)
    return settings
