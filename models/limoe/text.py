"""Byte-level text ids, the convention of seqio.ByteVocabulary (0 padding, 1 end, 2 unknown, byte b -> b + 3),
kept here so that models need not import seqio."""
from typing import Sequence

import numpy as np

PAD, EOS, OFFSET = 0, 1, 3
VOCAB_SIZE = 256 + OFFSET


def encode(text: str, length: int) -> np.ndarray:
  """UTF-8 bytes + 3, then the end id, padded (or cut) to `length` int32 ids."""
  ids = [b + OFFSET for b in text.encode("utf-8")][:length - 1] + [EOS]
  return np.array(ids + [PAD] * (length - len(ids)), np.int32)


def encode_all(texts: Sequence[str], length: int) -> np.ndarray:
  """[len(texts), length] ids."""
  return np.stack([encode(t, length) for t in texts])
