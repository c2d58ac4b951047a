"""seqio tasks, data generators and simulators, loaders for users' real data, and evaluation metrics."""
import contextlib
import os


@contextlib.contextmanager
def _stderr_silenced():
  """Silences file descriptor 2: TensorFlow's C++ start-up logs (CUDA probing on CPU-only hosts) ignore
  TF_CPP_MIN_LOG_LEVEL. Python exceptions still propagate and are printed after it is restored."""
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with _stderr_silenced():
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import seqio  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  # TensorFlow only feeds data: keep it off accelerators, whose memory belongs to JAX.
  tensorflow.config.set_visible_devices([], "GPU")
