"""Image transforms for ViT-style training (big_vision's decode + Inception crop, flip, value range) and
evaluation (resize + central crop), run per example in the loader's workers.

A transform is called as transform(example, rng) with rng seeded from (seed, epoch, example index), so the same
example in the same epoch is augmented the same way after a resume or on another number of processes. The
'image' feature may be encoded bytes (decoded here) or a decoded uint8/float array.

Images leave the workers as uint8, a quarter of the bytes of float32 through shared memory and to the devices;
`device_value_ranges` tells the loader to map them to float32 in `value_range` on the device.
"""
import dataclasses
import io
from typing import Dict, Sequence

import gin
import numpy as np
from PIL import Image



def _is_encoded(image) -> bool:
  return isinstance(image, (bytes, np.bytes_)) or (isinstance(image, np.ndarray) and (
      image.dtype.kind == "S" or (image.dtype == np.uint8 and image.ndim == 1)))


def _open(image, channels: int) -> Image.Image:
  """A PIL image, not yet decoded when `image` is encoded bytes (so a JPEG can be decoded at a reduced scale
  with `draft`); decoded arrays (uint8, or float in [0, 1]) are converted."""
  if _is_encoded(image):
    raw = image.tobytes() if isinstance(image, np.ndarray) else bytes(image)
    return Image.open(io.BytesIO(raw))
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  if image.shape[-1] != channels:
    image = np.repeat(image, 3, axis=-1) if channels == 3 else image.mean(-1, keepdims=True).astype(np.uint8)
  return Image.fromarray(image[..., 0] if channels == 1 else image)


def _decode_region(image: Image.Image, box, out_size, channels: int) -> Image.Image:
  """The region box = (left, top, right, bottom) of the image, resized to out_size = (width, height). A JPEG is
  decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives the region at least out_size pixels, as
  TensorFlow's decode_and_crop_jpeg saves work."""
  mode = "L" if channels == 1 else "RGB"
  width, height = image.size
  left, top, right, bottom = box
  wanted = (max(1, -(-width * out_size[0] // max(right - left, 1))),
            max(1, -(-height * out_size[1] // max(bottom - top, 1))))
  image.draft(mode, wanted)  # a no-op for anything but JPEG
  scale_x, scale_y = width / image.size[0], height / image.size[1]
  image = image.convert(mode)
  return image.resize(out_size, Image.BILINEAR,
                      box=(left / scale_x, top / scale_y, right / scale_x, bottom / scale_y))


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


def _finish(image: Image.Image, channels: int) -> np.ndarray:
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


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
    image = _open(example["image"], self.channels)
    top, left, h, w = inception_crop_box(image.height, image.width, rng, self.area_range)
    image = _decode_region(image, (left, top, left + w, top + h), (self.size, self.size), self.channels)
    if self.flip and rng.random() < 0.5:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return {**example, "image": _finish(image, self.channels)}


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
    image = _open(example["image"], self.channels)
    # The central square of side crop_fraction x the shorter side, resized to size x size.
    side = self.crop_fraction * min(image.width, image.height)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    image = _decode_region(image, (left, top, left + side, top + side), (self.size, self.size), self.channels)
    return {**example, "image": _finish(image, self.channels)}
