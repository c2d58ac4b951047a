"""Synthetic photographs for the input benchmarks: smooth random scenes of varied sizes, JPEG-encoded (about
ImageNet's sizes and compressibility, unlike noise), deterministic per index."""
import io
from typing import Optional

import numpy as np
from PIL import Image


def photo(index: int, seed: int = 0, size: Optional[int] = None) -> np.ndarray:
  """uint8 [H, W, 3]: low-frequency colour fields plus fine texture; H, W in [240, 500], or both `size`."""
  rng = np.random.default_rng([seed, index])
  height, width = (int(v) for v in rng.integers(240, 501, 2))
  if size is not None:
    height = width = size
  coarse = rng.random((6, 8, 3)) * 255
  image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
  image += rng.normal(0, 12, (height, width, 3))
  return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(index: int, seed: int = 0, quality: int = 90) -> bytes:
  """photo(index) as JPEG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(photo(index, seed)).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()
