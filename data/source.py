"""The two interfaces of the input layer: a `Source` of examples by index, and a per-example `Transform`.

Every source (prepared splits, seqio ArrayRecord caches, TFDS ArrayRecord datasets, the Zarr radar archive, the
Atari episodes) derives from `Source` and implements `__len__` and `__getitem__`. Its optional capabilities are
members with a plain default here, which a source overrides where it can do better (read a batch in one call,
read one column without decoding the rest, describe itself). Nothing in shardline probes a source for methods.
"""
import abc
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Example = Dict[str, Any]


class Source(abc.ABC):
  """Random access to a split: `len(source)` examples, `source[i]` a dict of numpy arrays (or bytes).

  Sources are pickled into grain's worker processes, so they open files lazily, on first use in a process.
  """

  @abc.abstractmethod
  def __len__(self) -> int:
    """The number of examples."""

  @abc.abstractmethod
  def __getitem__(self, index: int) -> Example:
    """Example `index`."""

  def examples(self, indices: Sequence[int]) -> List[Example]:
    """Several examples; sources override this to read a batch in one call."""
    return [self[int(i)] for i in indices]

  def feature_names(self) -> Tuple[str, ...]:
    """The names of the features each example has; by default those of the first example."""
    return tuple(self[0])

  def column(self, name: str, indices: Sequence[int]) -> np.ndarray:
    """One feature of the examples at `indices`, stacked; sources override this to skip the other features."""
    return np.stack([np.asarray(self[int(i)][name]) for i in indices])

  def describe(self) -> str:
    """One line for the run's `Data:` log line."""
    return f"{len(self):,} examples"


class Transform(abc.ABC):
  """A per-example transform, run in the loader's workers: transform(example, rng) -> example, where rng is
  seeded from (seed, epoch, example index), so a resume or another process count sees the same output."""

  @abc.abstractmethod
  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    """The transformed example."""

  def device_value_ranges(self) -> Mapping[str, Sequence[float]]:
    """Features the transform leaves as uint8, by name, with the (low, high) float range the device maps them
    to after the transfer; none by default."""
    return {}

  def describe(self) -> Optional[str]:
    """A phrase for the run's `Data:` log line, or None."""
    return None
