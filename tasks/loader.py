"""Deterministic, index-based batches from a seqio task.

A split is materialised once from the seqio task (its preprocessors applied) into in-memory arrays. The
examples of training step `s` are then a pure function of (seed, s): the global example counter
`s * batch + j` picks an epoch and a position in that epoch's permutation. Resuming at step s therefore
replays exactly the batches an uninterrupted run would have seen; the data iterator's state is the step.

In a multi-process run each process materialises the split but gathers only the rows of the global batch that
its own devices hold, and the trainer assembles global arrays from those process-local rows.
"""
import dataclasses
from typing import Dict, Optional

import numpy as np
import tensorflow_datasets as tfds

from shardline.core.errors import UserError
from shardline.tasks import registry

Examples = Dict[str, np.ndarray]


def materialize(task_name: str, split: str, max_examples: Optional[int] = None) -> Examples:
  """All examples of a seqio task's split, as a dict of stacked numpy arrays."""
  task = registry.get_task(task_name)
  if split not in task.splits:
    raise UserError(f"Task {task_name!r} has no split {split!r}; it has {', '.join(task.splits)}.")
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
  if max_examples:
    ds = ds.take(max_examples)
  rows = list(tfds.as_numpy(ds))
  if not rows:
    raise UserError(f"Task {task_name!r} split {split!r} produced no examples; check its data source.")
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@dataclasses.dataclass(frozen=True)
class StepSampler:
  """The examples of every training step, as a pure function of the step.

  Attributes:
    num_examples: size of the split.
    global_batch: examples per step over all processes.
    seed: shuffling seed.
  """
  num_examples: int
  global_batch: int
  seed: int = 0

  def indices(self, step: int) -> np.ndarray:
    """Example indices [global_batch] of training step `step`."""
    counter = step * self.global_batch + np.arange(self.global_batch, dtype=np.int64)
    epochs, positions = np.divmod(counter, self.num_examples)
    out = np.empty(self.global_batch, np.int64)
    for epoch in np.unique(epochs):
      perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_examples)
      sel = epochs == epoch
      out[sel] = perm[positions[sel]]
    return out
