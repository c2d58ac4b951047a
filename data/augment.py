"""Image transforms for ViT-style training (big_vision's decode + Inception crop, flip, value range) and
evaluation (resize + central crop), run per example in the loader's workers.

A transform is called as transform(example, rng) with rng seeded from (seed, epoch, example index), so the same
example in the same epoch is augmented the same way after a resume or on another number of processes. The
'image' feature may be encoded bytes (decoded in image_decode.py, only the crop of a JPEG) or a decoded
uint8/float array.

Images leave the workers as uint8, a quarter of the bytes of float32 through shared memory and to the devices;
`device_value_ranges` tells the loader to map them to float32 in `value_range` on the device.
"""
import dataclasses
from typing import Dict, Sequence

import gin
import numpy as np

from shardline.data import source


def _decode():
  from shardline.data import image_decode  # pylint: disable=g-import-not-at-top  (OpenCV, simplejpeg: workers only)
  return image_decode


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
class TrainImages(source.Transform):
  """Decode, Inception crop (random resized crop) to size x size, random left-right flip, value range.

  Attributes:
    size: output height and width.
    channels: 1 or 3.
    area_range: the crop's fraction of the image area.
    flip: flip left-right with probability 1/2.
    value_range: pixel values are mapped from [0, 1] to this range (on the device).
    partial_decode: decode only a JPEG's crop (data/_jpeg_window.c) where that decoder is built; False decodes
      whole images, whose crops' edge pixels differ by a few levels (for a run whose hosts lack the decoder).
  """
  size: int = 224
  channels: int = 3
  area_range: Sequence[float] = (0.05, 1.0)
  flip: bool = True
  value_range: Sequence[float] = (0.0, 1.0)
  partial_decode: bool = True

  def device_value_ranges(self) -> Dict[str, Sequence[float]]:
    return {"image": tuple(self.value_range)}

  def describe(self) -> str:
    return (f"Inception crop to {self.size} px" + (", flip" if self.flip else "") + "; "
            + _decode().describe_jpeg_decoding(self.partial_decode))

  def __call__(self, example: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    image = _decode().Image(example["image"], self.channels, self.partial_decode)
    pixels = image.region(inception_crop_box(image.height, image.width, rng, self.area_range), self.size)
    if self.flip and rng.random() < 0.5:
      pixels = _decode().flip_left_right(pixels)
    return {**example, "image": pixels}


@gin.configurable("eval_images", module="data")
@dataclasses.dataclass(frozen=True)
class EvalImages(source.Transform):
  """Decode, central crop of crop_fraction of the shorter side, resized to size x size, value range (the same
  pixels as resizing the shorter side to size / crop_fraction and cropping size x size).

  Attributes:
    size: output height and width.
    channels: 1 or 3.
    crop_fraction: the central crop's share of the resized shorter side (0.875 as in big_vision's ImageNet
      evaluation; 1.0 resizes the whole image).
    value_range: pixel values are mapped from [0, 1] to this range (on the device).
    partial_decode: as TrainImages'.
  """
  size: int = 224
  channels: int = 3
  crop_fraction: float = 0.875
  value_range: Sequence[float] = (0.0, 1.0)
  partial_decode: bool = True

  def __post_init__(self):
    if not 0 < self.crop_fraction <= 1:
      raise ValueError(f"data.eval_images.crop_fraction is {self.crop_fraction}; it is the central crop's share of "
                       "the shorter side, in (0, 1]: 0.875 as big_vision's ImageNet evaluation, 1.0 for the whole.")

  def device_value_ranges(self) -> Dict[str, Sequence[float]]:
    return {"image": tuple(self.value_range)}

  def describe(self) -> str:
    return f"central crop to {self.size} px; " + _decode().describe_jpeg_decoding(self.partial_decode)

  def __call__(self, example: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    del rng  # deterministic
    image = _decode().Image(example["image"], self.channels, self.partial_decode)
    # The central square of side crop_fraction x the shorter side, resized to size x size.
    side = self.crop_fraction * min(image.width, image.height)
    box = ((image.height - side) / 2, (image.width - side) / 2, side, side)
    return {**example, "image": image.region(box, self.size)}
