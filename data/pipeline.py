"""Batches from a random-access source: this process's rows of each global batch, loaded by grain (in worker
processes when `workers` > 0), assembled into global arrays and prefetched onto the devices ahead of the step.

Every element of the grain dataset is one step's local batch and a pure function of the step, so the output is
the same with 0 or N workers and after a resume. Per-example randomness is seeded from (seed, epoch, example
index); see augment.py.
"""
import queue
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import NamedSharding

from shardline.core.errors import UserError
from shardline.data import order
from shardline.data import workers as workers_lib
from shardline.data.source import Source, Transform

Batch = Dict[str, np.ndarray]


class RowLoader:
  """Loads and stacks examples of a source by index, applying a seeded per-example transform. Picklable, so it
  runs in grain's worker processes."""

  def __init__(self, source: Source, features, transform: Optional[Transform], seed: int, strict: bool = True):
    """`features` are the names stacked; with `strict` each example must have all of them, otherwise those it
    lacks are left out (an evaluation batch names every feature a model can use)."""
    self.source, self.features, self.transform = source, tuple(features), transform
    self.seed, self.strict = seed, strict

  def example(self, index: int, epoch: int, example: Optional[Dict[str, np.ndarray]] = None):
    """Example `index`, transformed with its (seed, epoch, index) generator; `example` if already read."""
    try:
      if example is None:
        example = self.source[int(index)]
      if self.transform is not None:
        example = self.transform(example, np.random.default_rng([self.seed, int(epoch), int(index)]))
    except UserError:
      raise
    except Exception as e:  # whatever a source or transform raises is named with its example
      raise UserError(f"Loading example {index} (epoch {epoch}) failed: {type(e).__name__}: {e}") from e
    missing = [name for name in self.features if name not in example]
    if missing and self.strict:
      raise UserError(f"Example {index} has no feature {', '.join(missing)} (it has {', '.join(example)}), which "
                      "the model needs. Check the task's preprocessors or stream transforms.")
    return example

  def stack(self, indices: np.ndarray, epochs: np.ndarray) -> Batch:
    rows = [self.example(i, e, x) for i, e, x in zip(indices, epochs, self.source.examples(indices))]
    return {name: np.stack([np.asarray(r[name]) for r in rows]) for name in self.features if name in rows[0]}


class TrainBatches:
  """grain element `step` -> this process's rows of the global batch of training step `step`."""

  def __init__(self, loader: RowLoader, sampler: order.StepSampler, rows: np.ndarray):
    self.loader, self.sampler, self.rows = loader, sampler, rows

  def __call__(self, step: int) -> Batch:
    epochs, indices = self.sampler.epochs_and_indices(int(step))
    return self.loader.stack(indices[self.rows], epochs[self.rows])


class EvalBatches:
  """grain element `b` -> this process's rows of padded evaluation batch `b` (every example once, in order; the
  padding repeats the last example and has 'weight' 0)."""

  def __init__(self, loader: RowLoader, num_examples: int, batch_size: int, rows: np.ndarray):
    self.loader, self.num_examples, self.batch_size, self.rows = loader, num_examples, batch_size, rows

  def __call__(self, b: int) -> Batch:
    positions = int(b) * self.batch_size + self.rows
    batch = self.loader.stack(np.minimum(positions, self.num_examples - 1), np.zeros_like(positions))
    batch["weight"] = (positions < self.num_examples).astype(np.float32)
    return batch


def _value_range_fn(low: float, high: float, sharding: NamedSharding):
  """uint8 [...] -> float32 [...] in [low, high], jitted, keeping the sharding."""
  scale = (high - low) / 255.0
  return jax.jit(lambda x: x.astype(np.float32) * np.float32(scale) + np.float32(low), out_shardings=sharding)


class DevicePrefetcher:
  """Global arrays of elements first..last-1, built on a background thread up to `ahead` elements ahead of the
  consumer. An error in loading is raised in the consumer, at the element it concerns.

  Use as a context manager, or call close(): it stops the thread and grain's workers.
  """

  def __init__(self, element_fn: Callable[[int], Batch], first: int, last: int,
               shardings: Dict[str, NamedSharding], global_rows: int, workers: int = 0, ahead: int = 2,
               value_ranges: Optional[Mapping[str, Sequence[float]]] = None):
    """`value_ranges` maps uint8 features to float32 in (low, high) on the device, after the transfer; `ahead`
    (stream.prefetch, checked by StreamSettings) is at least 1."""
    self._shardings, self._global_rows = shardings, global_rows
    self._to_float = {name: _value_range_fn(low, high, shardings[name])
                      for name, (low, high) in (value_ranges or {}).items() if name in shardings}
    self._first, self._last = first, last
    self._peeked = None
    self._queue: "queue.Queue[Tuple[int, Any]]" = queue.Queue(maxsize=ahead)
    self._stop = threading.Event()
    self._iterator = workers_lib.grain_iterator(element_fn, first, last, workers)
    self._thread = threading.Thread(target=self._produce, args=(first, last), daemon=True, name="prefetch")
    self._thread.start()

  def _globalize(self, local: Batch) -> Dict[str, jax.Array]:
    out = {}
    for name, sharding in self._shardings.items():
      if name in local:
        # A copy: grain's workers hand over arrays in shared memory, which must be released now rather than
        # live on inside a device buffer that aliases host memory (CPU).
        rows = np.array(local[name], copy=True)
        out[name] = jax.make_array_from_process_local_data(sharding, rows, (self._global_rows,) + rows.shape[1:])
        if name in self._to_float:
          out[name] = self._to_float[name](out[name])
    return out

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self, first: int, last: int) -> None:
    try:
      for element in range(first, last):
        if not self._put((element, self._globalize(next(self._iterator)))):
          return
      next(self._iterator, None)  # lets grain see the end and release its workers' shared memory
    except BaseException as e:  # pylint: disable=broad-except  re-raised in the consumer
      self._put((None, e))

  def peek(self, element: int) -> Dict[str, jax.Array]:
    """The global arrays of the next element, `element`, without consuming it (to compile against)."""
    if self._peeked is None:
      self._peeked = self._next(element)
    return self._peeked

  def get(self, element: int) -> Dict[str, jax.Array]:
    """The global arrays of `element` (elements are consumed in order)."""
    if self._peeked is not None:
      value, self._peeked = self._peeked, None
      return value
    return self._next(element)

  def _next(self, element: int) -> Dict[str, jax.Array]:
    if not self._first <= element < self._last:  # nothing would ever arrive: fail instead of waiting forever
      raise IndexError(f"element {element} is outside the prefetched range {self._first}..{self._last - 1}")
    got, value = self._queue.get()
    if got is None:
      raise value
    assert got == element, f"prefetch order: expected element {element}, got {got}"
    return value

  def __iter__(self) -> Iterator[Dict[str, jax.Array]]:
    for element in range(self._first, self._last):
      yield self.get(element)

  def close(self) -> None:
    self._stop.set()
    self._thread.join()
    self._iterator.close()
    self._iterator = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
