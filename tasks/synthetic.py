"""Synthetic images with random labels, as a direct source: the shapes of a real image task (224 px RGB, 1000
classes) without its data, for throughput experiments (`experiments/vit22b_slice_h100.gin`) and for the CI
stand-ins of experiments whose data is not at hand. Neither TensorFlow nor seqio is needed.

Example i of a split is a pure function of (seed, split, i): uniform float32 pixels in [0, 1] and a uniform
label, so every host and every resume sees the same data.
"""
import zlib
from typing import Dict

import gin
import numpy as np

from shardline.core.errors import UserError
from shardline.data import source
from shardline.tasks import splits

SPLITS = ("train", "test")


class SyntheticImages(source.Source):
  """Random images [size, size, channels] float32 in [0, 1] and labels in [0, num_classes)."""

  def __init__(self, split: str, size: int, channels: int, num_classes: int, examples: int, seed: int):
    if split not in SPLITS:
      raise UserError(f"The synthetic image task has no split {split!r}; it has {', '.join(SPLITS)}.")
    self.split, self.size, self.channels, self.num_classes = split, size, channels, num_classes
    self.examples_per_split, self.seed = examples, seed

  def __len__(self) -> int:
    return self.examples_per_split

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, zlib.crc32(self.split.encode()), int(index)])
    image = rng.random((self.size, self.size, self.channels), dtype=np.float32)
    return {"image": image, "label": np.int32(rng.integers(self.num_classes))}

  def feature_names(self):
    return ("image", "label")

  def describe(self) -> str:
    return (f"{len(self):,} synthetic {self.size}x{self.size}x{self.channels} images of {self.num_classes} "
            f"classes ({self.split!r}, random pixels and labels)")


@gin.configurable(module="tasks")
def synthetic_images(image_size: int = 224, channels: int = 3, num_classes: int = 1000, examples: int = 1024,
                     seed: int = 0) -> str:
  """Registers (once) and returns the name of a synthetic image classification task with `examples` examples
  in each split ('train', 'test')."""
  for name, value in (("image_size", image_size), ("channels", channels), ("num_classes", num_classes),
                      ("examples", examples)):
    if value < 1:
      raise UserError(f"tasks.synthetic_images.{name} = {value}; it must be a positive integer.")
  name = f"synthetic_images_{image_size}px_{channels}ch_{num_classes}cls_{examples}ex_seed{seed}"
  splits.register_direct(name, lambda split: SyntheticImages(split, image_size, channels, num_classes, examples,
                                                             seed))
  return name
