"""Random access to records spread over ArrayRecord shards, the global index running shard by shard: the reading
shared by prepared splits (prepared.py) and seqio's caches (seqio_cache.py). A damaged record is named by its
shard and position, with the remedy its owner gives.

Picklable: each loader worker opens its own readers on first use.
"""
import bisect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from shardline.core.errors import UserError


class ShardedRecords:
  """`len(records)` records; `read(i)` and `read_many(indices)` give their bytes.

  Args:
    paths: the shards, in index order.
    counts: the records in each shard; None counts them (opening every shard).
    label: how a message names a shard ('shard', 'the seqio cache shard').
    remedy: the sentence that says how to mend a damaged shard.
  """

  def __init__(self, paths: Sequence[str], counts: Optional[Sequence[int]], label: str, remedy: str):
    self.paths, self.label, self.remedy = list(paths), label, remedy
    self._readers: Dict[int, Any] = {}
    if counts is None:
      counts = [self.reader(shard).num_records() for shard in range(len(self.paths))]
    self._starts = [int(s) for s in np.cumsum([0] + list(counts))]

  def __getstate__(self):
    return {**self.__dict__, "_readers": {}}

  def __len__(self) -> int:
    return self._starts[-1]

  def locate(self, index: int) -> Tuple[int, int]:
    """(shard, position in that shard) of record `index`."""
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of a split of {len(self)}")
    shard = bisect.bisect_right(self._starts, index) - 1
    return shard, index - self._starts[shard]

  def where(self, index: int) -> str:
    """'record 3 of shard /path (example 20003)', for messages."""
    shard, local = self.locate(index)
    return f"record {local} of {self.label} {self.paths[shard]} (example {index})"

  def reader(self, shard: int):
    """The (cached) ArrayRecord reader of a shard."""
    if shard not in self._readers:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      try:
        self._readers[shard] = array_record_module.ArrayRecordReader(self.paths[shard], "readahead_buffer_size:0")
      except Exception as e:  # riegeli reports a damaged footer as RuntimeError or ValueError
        raise UserError(f"The {self.label} {self.paths[shard]} cannot be opened ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]}). {self.remedy}") from e
    return self._readers[shard]

  def read(self, index: int) -> bytes:
    """The bytes of record `index`."""
    shard, local = self.locate(index)
    reader = self.reader(shard)
    try:
      return reader.read([local])[0]
    except Exception as e:  # riegeli reports damaged chunks as RuntimeError or ValueError
      raise UserError(f"Record {local} of {self.label} {self.paths[shard]} (example {index}) cannot be read: "
                      f"{type(e).__name__}: {str(e).splitlines()[0]}. {self.remedy}") from e

  def read_many(self, indices: Sequence[int]) -> List[bytes]:
    """The bytes of several records, read shard by shard in one call each (much faster than one by one)."""
    indices = [int(i) for i in indices]
    located = [self.locate(i) for i in indices]
    stored: Dict[int, bytes] = {}
    for shard in sorted({s for s, _ in located}):
      wanted = [(i, local) for i, (s, local) in zip(indices, located) if s == shard]
      try:
        stored.update(zip([i for i, _ in wanted], self.reader(shard).read([local for _, local in wanted])))
      except UserError:
        raise
      except Exception:  # pylint: disable=broad-except  one by one, to name the damaged record
        stored.update((i, self.read(i)) for i, _ in wanted)
    return [stored[i] for i in indices]
