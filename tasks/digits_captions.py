"""Image-caption pairs on the bundled 8x8 digits, as a seqio task: real images, captions from templates.

Each image gets one caption, its template chosen by the example's index, tokenized by seqio's byte vocabulary
(no download) to TEXT_LENGTH ids: the bytes, an end id, padding. The split is the digits task's.
"""
from typing import Dict

import numpy as np

from shardline.tasks.tensorflow_setup import seqio, tf
from shardline.tasks import captions as captions_lib
from shardline.tasks import digits

TASK_NAME = "digits_captions"
TEXT_LENGTH = 32
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a photo of the digit {word}", "handwritten {digit}", "the number {word}", "a drawing of a {word}",
             "digit {digit}", "a handwritten {word}", "an image of the number {digit}")


def captions(split: str) -> list:
  """The caption of every example of a split."""
  labels = digits.load_split(split)["label"]
  return [TEMPLATES[i % len(TEMPLATES)].format(word=WORDS[y], digit=y) for i, y in enumerate(labels)]


def _dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
  del shuffle_files, seed
  data: Dict[str, np.ndarray] = dict(digits.load_split(split))
  data["caption"] = np.array(captions(split))
  return tf.data.Dataset.from_tensor_slices(data)


def _tokenize(dataset: tf.data.Dataset) -> tf.data.Dataset:
  def one(ex):
    return {"image": ex["image"], "label": ex["label"], "text": captions_lib.tokenize_caption(ex["caption"],
                                                                                            TEXT_LENGTH)}
  return dataset.map(one, num_parallel_calls=tf.data.AUTOTUNE)


if TASK_NAME not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      TASK_NAME,
      source=seqio.FunctionDataSource(_dataset_fn, splits=digits.SPLITS,
                                      num_input_examples={s: len(digits.load_split(s)["label"])
                                                          for s in digits.SPLITS}),
      preprocessors=[_tokenize],
      output_features=captions_lib.output_features(),
  )
