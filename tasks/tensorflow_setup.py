"""TensorFlow and seqio for the task modules, imported once, quietly, and kept off the accelerators.

TensorFlow only feeds data here (seqio preprocessors at prepare time): the accelerators' memory belongs to JAX.
Import them from here: `from shardline.tasks.tensorflow_setup import seqio, tf`.
"""
import os

from shardline.core.errors import stderr_silenced

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's C++ start-up logs (CUDA probing on CPU-only hosts) ignore TF_CPP_MIN_LOG_LEVEL.
with stderr_silenced():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")

__all__ = ["seqio", "tf"]
