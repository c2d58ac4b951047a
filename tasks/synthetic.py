"""Synthetic images with random labels (and random byte captions), as direct sources: the shapes of a real
image (or image-text) task without its data, for throughput experiments (`experiments/vit22b_slice_h100.gin`,
`experiments/limoe_b16_gpu.gin`) and for the CI stand-ins of experiments whose data is not at hand. Neither
TensorFlow nor seqio is needed.

Example i of a split is a pure function of (seed, split, i): uniform float32 pixels in [0, 1], a uniform label
and, with text, uniform caption bytes followed by the end-of-text token, so every host and every resume sees the
same data.
"""
import zlib
from typing import Dict

import gin
import numpy as np

from shardline.core.errors import UserError
from shardline.data import source
from shardline.tasks import splits

SPLITS = ("train", "test")
# seqio's ByteVocabulary numbering, which the image-text tasks use (tasks/captions.py): byte b is b + 3, then the
# end id; 0 pads. tests/tasks/test_synthetic.py checks these against seqio.
BYTE_OFFSET, EOS = 3, 1


class SyntheticImages(source.Source):
  """Random images [size, size, channels] float32 in [0, 1], labels in [0, num_classes) and, with text_length,
  byte captions [text_length] int32 (seqio's byte ids)."""

  def __init__(self, split: str, size: int, channels: int, num_classes: int, examples: int, seed: int,
               text_length: int = 0):
    if split not in SPLITS:
      raise UserError(f"The synthetic image task has no split {split!r}; it has {', '.join(SPLITS)}.")
    self.split, self.size, self.channels, self.num_classes = split, size, channels, num_classes
    self.examples_per_split, self.seed, self.text_length = examples, seed, text_length

  def __len__(self) -> int:
    return self.examples_per_split

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, zlib.crc32(self.split.encode()), int(index)])
    example = {"image": rng.random((self.size, self.size, self.channels), dtype=np.float32),
               "label": np.int32(rng.integers(self.num_classes))}
    if self.text_length:
      length = int(rng.integers(1, self.text_length))
      text = np.zeros(self.text_length, np.int32)
      text[:length] = rng.integers(ord("a"), ord("z") + 1, length) + BYTE_OFFSET
      text[length] = EOS
      example["text"] = text
    return example

  def feature_names(self):
    return ("image", "label") + (("text",) if self.text_length else ())

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


@gin.configurable(module="tasks")
def synthetic_image_text(image_size: int = 224, channels: int = 3, text_length: int = 16, num_classes: int = 10,
                         examples: int = 1024, seed: int = 0) -> str:
  """Registers (once) and returns the name of a synthetic image-caption task: random images, random byte
  captions of up to text_length - 1 letters, and a label for zero-shot evaluation."""
  if text_length < 2:
    raise UserError(f"tasks.synthetic_image_text.text_length = {text_length}; it must be at least 2.")
  image_task = synthetic_images(image_size, channels, num_classes, examples, seed)
  name = f"{image_task.replace('synthetic_images', 'synthetic_image_text')}_{text_length}tok"
  splits.register_direct(name, lambda split: SyntheticImages(split, image_size, channels, num_classes, examples,
                                                             seed, text_length))
  return name
