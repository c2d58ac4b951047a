"""Goodput: where a run's wall time went.

The run times each phase that is not training: start-up (building the mesh and state, reading the data),
restoring, compiling, and, inside the step loop, waiting for data, evaluating, the blocking part of checkpoint
saves and publishing profiles. Training is what remains of the loop's time, so the phases add up to the wall
time. The end of a run prints the table and writes it to TensorBoard as goodput/<phase>_seconds and
goodput/<phase>_fraction.
"""
import contextlib
import time
from typing import Dict, Iterator

PHASES = ("startup", "restore", "compile", "train", "data", "eval", "checkpoint", "profile")


class Goodput:
  """Accumulates seconds per phase from the start of a run."""

  def __init__(self):
    self.start = time.perf_counter()
    self.seconds: Dict[str, float] = {phase: 0.0 for phase in PHASES}

  def loop_started(self) -> None:
    """Marks the start of the step loop: the time before it that no phase claimed was start-up."""
    before = time.perf_counter() - self.start
    self.seconds["startup"] = max(before - self.seconds["restore"] - self.seconds["compile"], 0.0)

  @contextlib.contextmanager
  def measure(self, phase: str) -> Iterator[None]:
    """Adds the block's wall time to `phase`."""
    begin = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[phase] += time.perf_counter() - begin

  def summary(self) -> Dict[str, float]:
    """Seconds per phase, with 'train' as the rest of the wall time; plus 'total'."""
    total = time.perf_counter() - self.start
    out = dict(self.seconds)
    out["train"] = max(total - sum(v for k, v in self.seconds.items() if k != "train"), 0.0)
    out["total"] = total
    return out

  @staticmethod
  def scalars(summary: Dict[str, float]) -> Dict[str, float]:
    """TensorBoard scalars: goodput/<phase>_seconds and goodput/<phase>_fraction."""
    total = max(summary["total"], 1e-9)
    out = {}
    for phase in PHASES:
      out[f"goodput/{phase}_seconds"] = summary[phase]
      out[f"goodput/{phase}_fraction"] = summary[phase] / total
    return out

  @staticmethod
  def table(summary: Dict[str, float]) -> str:
    """The end-of-run lines: seconds and share of the wall time, phase by phase."""
    total = max(summary["total"], 1e-9)
    lines = [f"Goodput: {100 * summary['train'] / total:.1f}% of {summary['total']:.1f} s trained"]
    for phase in PHASES:
      if summary[phase] >= 0.05:
        lines.append(f"  {phase:<11} {summary[phase]:9.1f} s  {100 * summary[phase] / total:5.1f}%")
    return "\n".join(lines)
