"""seqio tasks, data generators and simulators, loaders for users' real data, and evaluation metrics."""
import os

from shardline.core.errors import stderr_silenced

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's C++ start-up logs (CUDA probing on CPU-only hosts) ignore TF_CPP_MIN_LOG_LEVEL.
with stderr_silenced():
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import seqio  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  # TensorFlow only feeds data: keep it off accelerators, whose memory belongs to JAX.
  tensorflow.config.set_visible_devices([], "GPU")
