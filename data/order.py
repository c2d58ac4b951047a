"""The global, step-indexed order of training examples.

An epoch is a permutation of the whole split, a pure function of (seed, epoch): a global shuffle, not a buffer.
Training step s takes the global positions [s·B, (s+1)·B) of the concatenated epochs. The data state of a run is
therefore its step and seed, and a run resumed on any number of processes sees the same global batches.
"""
import dataclasses
import hashlib
from typing import Tuple

import numpy as np


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

  def epochs_and_indices(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
    """(epoch [global_batch], example index [global_batch]) of every row of training step `step`."""
    counter = step * self.global_batch + np.arange(self.global_batch, dtype=np.int64)
    epochs, positions = np.divmod(counter, self.num_examples)
    out = np.empty(self.global_batch, np.int64)
    for epoch in np.unique(epochs):
      perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_examples)
      chosen = epochs == epoch
      out[chosen] = perm[positions[chosen]]
    return epochs, out

  def indices(self, step: int) -> np.ndarray:
    """Example indices [global_batch] of training step `step`."""
    return self.epochs_and_indices(step)[1]


def fingerprint(indices: np.ndarray) -> int:
  """A 53-bit fingerprint of a global batch's example ids, in order (exact in JSON and as a float)."""
  digest = hashlib.sha256(np.ascontiguousarray(indices, np.int64).tobytes()).digest()
  return int.from_bytes(digest[:8], "little") >> 11
