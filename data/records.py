"""One example as bytes: flax's msgpack encoding of a dict of numpy arrays (no pickle; about 5 us to decode an
example, against about 150 us for an .npz). Its bytes depend only on the arrays, so a re-run prepare writes
identical shards. Byte strings (an encoded image straight from TFDS) are stored as msgpack bytes.

Images (uint8 [H, W, C] with C in 1 or 3) are stored PNG-encoded, losslessly, and decoded where they are read:
in the loader's worker processes.
"""
import io
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from flax import serialization
from PIL import Image

Example = Dict[str, np.ndarray]
PNG = "png"


def is_image(value: np.ndarray) -> bool:
  """Whether a feature is stored as an encoded image."""
  return value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] in (1, 3) and min(value.shape[:2]) >= 8


def encode_png(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] -> PNG bytes as a uint8 [n] array."""
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return np.frombuffer(buffer.getvalue(), np.uint8)


def decode_image(data, channels: int = 0) -> np.ndarray:
  """Encoded image bytes (PNG, JPEG, ...; bytes or a uint8 array) -> uint8 [H, W, C]. `channels` 1 or 3 converts;
  0 keeps the image's own (grayscale gives C = 1)."""
  raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
  with Image.open(io.BytesIO(raw)) as image:
    mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if image.mode in ("L", "1", "I;16") else "RGB")
    array = np.asarray(image.convert(mode))
  return array[..., None] if array.ndim == 2 else array


def _storable(value: np.ndarray):
  if value.dtype.kind == "S" and value.ndim == 0:
    return value.tobytes()  # exact, trailing NUL bytes included
  if value.dtype.kind == "O" and value.ndim == 0 and isinstance(value.item(), bytes):
    return value.item()
  return value


def encode(example: Mapping[str, np.ndarray], encodings: Mapping[str, str]) -> bytes:
  """An example -> record bytes; features named in `encodings` as 'png' are stored encoded."""
  return serialization.msgpack_serialize(
      {k: encode_png(v) if encodings.get(k) == PNG else _storable(np.asarray(v)) for k, v in example.items()})


def decode(record: bytes, keys: Optional[Sequence[str]] = None) -> Example:
  """Record bytes -> the stored arrays, all or only `keys` (encoded images stay encoded: see `decode_image`)."""
  stored = serialization.msgpack_restore(record)
  return stored if keys is None else {k: stored[k] for k in keys}
