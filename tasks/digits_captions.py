"""Image-caption pairs on the bundled 8x8 digits, as a seqio task: real images, captions from templates.

Each image gets one caption, its template chosen by the example's index, tokenized by seqio's byte vocabulary
(no download) to TEXT_LENGTH ids: the bytes, an end id, padding. The split is the digits task's.
"""
from typing import Dict

import numpy as np
import seqio
import tensorflow as tf

from shardline.tasks import digits

TASK_NAME = "digits_captions"
TEXT_LENGTH = 32
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a photo of the digit {word}", "handwritten {digit}", "the number {word}", "a drawing of a {word}",
             "digit {digit}", "a handwritten {word}", "an image of the number {digit}")
VOCABULARY = seqio.ByteVocabulary()


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
    ids = VOCABULARY.encode_tf(ex["caption"])[:TEXT_LENGTH - 1]
    ids = tf.concat([ids, [VOCABULARY.eos_id]], axis=0)
    ids = tf.pad(ids, [[0, TEXT_LENGTH - tf.shape(ids)[0]]], constant_values=VOCABULARY.pad_id)
    return {"image": ex["image"], "label": ex["label"], "text": tf.ensure_shape(tf.cast(ids, tf.int32),
                                                                                  [TEXT_LENGTH])}
  return dataset.map(one, num_parallel_calls=tf.data.AUTOTUNE)


if TASK_NAME not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      TASK_NAME,
      source=seqio.FunctionDataSource(_dataset_fn, splits=digits.SPLITS,
                                      num_input_examples={s: len(digits.load_split(s)["label"])
                                                          for s in digits.SPLITS}),
      preprocessors=[_tokenize],
      output_features={
          "image": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.float32, rank=3),
          "text": seqio.Feature(VOCABULARY, add_eos=False, dtype=tf.int32, rank=1),
          "label": seqio.Feature(seqio.PassThroughVocabulary(10), add_eos=False, dtype=tf.int32, rank=0),
      },
  )
