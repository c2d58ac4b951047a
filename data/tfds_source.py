"""A TFDS dataset built in ArrayRecord format (`tfds build --file_format=array_record`), read directly: no
prepare step, random access through `tfds.data_source`, images left encoded for the workers to decode."""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from shardline.data import source


class TfdsSource(source.Source):
  """Random access to one split of a TFDS ArrayRecord dataset, with its features renamed.

  Attributes:
    tfds_name, data_dir, split: the dataset.
    renames: TFDS feature name -> the name the task gives it (e.g. {'image': 'image', 'label': 'label'}).
    encoded: TFDS image features left as their encoded bytes.
  """

  def __init__(self, tfds_name: str, data_dir: str, split: str, renames: Dict[str, str], encoded: Sequence[str]):
    self.tfds_name, self.data_dir, self.split = tfds_name, data_dir, split
    self.renames, self.encoded = dict(renames), tuple(encoded)
    self.features = tuple(self.renames.values())
    self._source = None
    self._length = len(self._open())

  def _open(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      self._source = tfds.data_source(self.tfds_name, split=self.split, data_dir=self.data_dir, download=False,
                                      decoders={name: tfds.decode.SkipDecoding() for name in self.encoded})
    return self._source

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def __len__(self) -> int:
    return self._length

  def feature_names(self) -> Tuple[str, ...]:
    return self.features

  def _rename(self, example: Dict[str, Any]) -> Dict[str, Any]:
    # Encoded images stay bytes (np.bytes_), which the transforms read in place: a copy into an array would cost
    # as much as reading the record.
    return {new: example[old] if old in self.encoded and isinstance(example[old], bytes) else np.asarray(example[old])
            for old, new in self.renames.items()}

  def __getitem__(self, index: int) -> Dict[str, Any]:
    return self._rename(self._open()[int(index)])

  def examples(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
    """Several examples in one read."""
    return [self._rename(e) for e in self._open().__getitems__([int(i) for i in indices])]

  def describe(self) -> str:
    return f"{len(self):,} examples of TFDS {self.tfds_name} {self.split!r} (ArrayRecord) under {self.data_dir}"
