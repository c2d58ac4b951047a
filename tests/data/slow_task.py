"""A seqio task for the killed-prepare test: the digits, slowed to about 2 ms per example, so a prepare of a
few shards takes seconds and can be killed between shards."""
import time

import numpy as np
import seqio
import tensorflow as tf

from shardline.tasks import digits

NAME = "slow_digits"


def _slow(dataset: tf.data.Dataset) -> tf.data.Dataset:
  def wait(label):
    time.sleep(0.002)
    return label
  return dataset.map(lambda ex: {**ex, "label": tf.ensure_shape(
      tf.numpy_function(wait, [ex["label"]], tf.int32, stateful=False), [])})


def _dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
  del shuffle_files, seed
  data = digits.load_split(split)
  return tf.data.Dataset.from_tensor_slices({"image": (data["image"] * 255).astype(np.uint8).repeat(2, 1).repeat(
      2, 2), "label": data["label"]})


if NAME not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      NAME, source=seqio.FunctionDataSource(_dataset_fn, splits=digits.SPLITS), preprocessors=[_slow],
      output_features={
          "image": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.uint8, rank=3),
          "label": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=0)})
