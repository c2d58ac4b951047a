"""Image transforms for ViT-style training (big_vision's decode + Inception crop, flip, value range) and
evaluation (resize + central crop), run per example in the loader's workers.

A transform is called as transform(example, rng) with rng seeded from (seed, epoch, example index), so the same
example in the same epoch is augmented the same way after a resume or on another number of processes. The
'image' feature may be encoded bytes (decoded here) or a decoded uint8/float array.

Decoding and resizing use OpenCV rather than Pillow: on 240-500 px JPEGs, OpenCV's decode is 1.3x faster than
Pillow's, and its bilinear crop-resize to 224 px 5x faster (0.06 against 0.35 ms), which together nearly halve
the time per image. The resize is bilinear without antialiasing, as tf.image.resize in big_vision's pipeline.

Images leave the workers as uint8, a quarter of the bytes of float32 through shared memory and to the devices;
`device_value_ranges` tells the loader to map them to float32 in `value_range` on the device.
"""
import dataclasses
import io
from typing import Dict, Sequence, Tuple

import cv2
import gin
import numpy as np
from PIL import Image

_JPEG_MAGIC = b"\xff\xd8"


def _rgb(flag: int) -> int:
  """A reduced-scale colour flag decoding RGB: OpenCV's IMREAD_REDUCED_COLOR_* decode BGR (IMREAD_COLOR_BGR is
  one of their bits), and IMREAD_COLOR_RGB takes that bit's place."""
  return (flag & ~cv2.IMREAD_COLOR_BGR) | cv2.IMREAD_COLOR_RGB


# (decoded size divisor, cv2 flag) for colour and for grayscale, finest first.
_REDUCED = {3: ((8, _rgb(cv2.IMREAD_REDUCED_COLOR_8)), (4, _rgb(cv2.IMREAD_REDUCED_COLOR_4)),
                (2, _rgb(cv2.IMREAD_REDUCED_COLOR_2))),
            1: ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))}
_FULL = {3: cv2.IMREAD_COLOR_RGB, 1: cv2.IMREAD_GRAYSCALE}
cv2.setNumThreads(1)  # OpenCV's own thread pool off: each loader worker is one core's worth of work


def _is_encoded(image) -> bool:
  return isinstance(image, (bytes, np.bytes_)) or (isinstance(image, np.ndarray) and (
      image.dtype.kind == "S" or (image.dtype == np.uint8 and image.ndim == 1)))


class _Image:
  """An image whose pixels are decoded only when a region of it is asked for, so that a large JPEG can be decoded
  at a reduced scale. `height` and `width` are known up front (from the JPEG header, without decoding)."""

  def __init__(self, image, channels: int):
    self.channels = channels
    if _is_encoded(image):
      self.encoded = np.frombuffer(image.tobytes() if isinstance(image, np.ndarray) else bytes(image), np.uint8)
      self.pixels = None
      if self.encoded[:2].tobytes() == _JPEG_MAGIC:
        self.width, self.height = Image.open(io.BytesIO(self.encoded)).size  # reads the header only
      else:
        self.pixels = self._decode(_FULL[channels])
    else:
      self.encoded, self.pixels = None, self._converted(np.asarray(image))
    if self.pixels is not None:
      self.height, self.width = self.pixels.shape[:2]

  def _converted(self, image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:  # float in [0, 1]
      image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] != self.channels:
      image = (np.repeat(image, 3, axis=-1) if self.channels == 3
               else image.mean(-1, keepdims=True).round().astype(np.uint8))
    return image

  def _decode(self, flag: int) -> np.ndarray:
    pixels = cv2.imdecode(self.encoded, flag | cv2.IMREAD_IGNORE_ORIENTATION)  # as TensorFlow: no EXIF rotation
    if pixels is None:
      raise ValueError(f"{len(self.encoded)} bytes that are not a JPEG or PNG image OpenCV can decode "
                       f"(they start {self.encoded[:8].tobytes()!r})")
    return self._converted(pixels)

  def region(self, box: Tuple[float, float, float, float], out_size: int) -> np.ndarray:
    """uint8 [out_size, out_size, channels]: box = (top, left, height, width) in full-size pixels, bilinearly
    resized. A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives the box at least
    out_size pixels each way."""
    top, left, h, w = box
    pixels, scale = self.pixels, 1
    if pixels is None:
      for divisor, flag in _REDUCED[self.channels]:
        if min(h, w) >= divisor * out_size:
          pixels, scale = self._decode(flag), divisor
          break
      else:
        pixels = self._decode(_FULL[self.channels])
    y0, x0 = int(round(top / scale)), int(round(left / scale))
    y1 = min(max(int(round((top + h) / scale)), y0 + 1), pixels.shape[0])
    x1 = min(max(int(round((left + w) / scale)), x0 + 1), pixels.shape[1])
    out = cv2.resize(pixels[y0:y1, x0:x1], (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def inception_crop_box(height: int, width: int, rng: np.random.Generator, area_range: Sequence[float],
                       aspect_range: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10):
  """(top, left, h, w) of a random crop covering a fraction of the area in area_range with an aspect ratio
  (log-uniform) in aspect_range; the whole image after `attempts` misses (as the Inception paper's crop)."""
  area = height * width
  for _ in range(attempts):
    target = area * rng.uniform(*area_range)
    aspect = np.exp(rng.uniform(np.log(aspect_range[0]), np.log(aspect_range[1])))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return 0, 0, height, width


@gin.configurable("train_images", module="data")
@dataclasses.dataclass(frozen=True)
class TrainImages:
  """Decode, Inception crop (random resized crop) to size x size, random left-right flip, value range.

  Attributes:
    size: output height and width.
    channels: 1 or 3.
    area_range: the crop's fraction of the image area.
    flip: flip left-right with probability 1/2.
    value_range: pixel values are mapped from [0, 1] to this range (on the device).
  """
  size: int = 224
  channels: int = 3
  area_range: Sequence[float] = (0.05, 1.0)
  flip: bool = True
  value_range: Sequence[float] = (0.0, 1.0)

  def device_value_ranges(self) -> Dict[str, Sequence[float]]:
    return {"image": tuple(self.value_range)}

  def __call__(self, example: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    image = _Image(example["image"], self.channels)
    pixels = image.region(inception_crop_box(image.height, image.width, rng, self.area_range), self.size)
    if self.flip and rng.random() < 0.5:
      pixels = cv2.flip(pixels, 1).reshape(pixels.shape)  # 1: about the vertical axis
    return {**example, "image": pixels}


@gin.configurable("eval_images", module="data")
@dataclasses.dataclass(frozen=True)
class EvalImages:
  """Decode, central crop of crop_fraction of the shorter side, resized to size x size, value range (the same
  pixels as resizing the shorter side to size / crop_fraction and cropping size x size).

  Attributes:
    size: output height and width.
    channels: 1 or 3.
    crop_fraction: the central crop's share of the resized shorter side (0.875 as in big_vision's ImageNet
      evaluation; 1.0 resizes the whole image).
    value_range: pixel values are mapped from [0, 1] to this range (on the device).
  """
  size: int = 224
  channels: int = 3
  crop_fraction: float = 0.875
  value_range: Sequence[float] = (0.0, 1.0)

  def device_value_ranges(self) -> Dict[str, Sequence[float]]:
    return {"image": tuple(self.value_range)}

  def __call__(self, example: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    del rng  # deterministic
    image = _Image(example["image"], self.channels)
    # The central square of side crop_fraction x the shorter side, resized to size x size.
    side = self.crop_fraction * min(image.width, image.height)
    box = ((image.height - side) / 2, (image.width - side) / 2, side, side)
    return {**example, "image": image.region(box, self.size)}
