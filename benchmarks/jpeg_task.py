"""The end-to-end GPU run's task: JPEGs prepared by `python -m benchmarks.gpu_data`, read without TensorFlow.

`benchmarks/gpu_e2e.gin` binds TASK to `benchmarks.prepared_jpegs`, which registers the prepared folders as a
task's direct source (tasks/splits.py), read by data/prepared.py alone: so `shardline train` decodes and augments
the JPEGs in grain workers exactly as it does a prepared split of any task, on a machine without TensorFlow, TFDS
or seqio. Imported as `shardline.benchmarks.jpeg_task` only (gin registers the configurable once per name).
"""
import os

import gin

from shardline.core.errors import UserError
from shardline.data import prepared
from shardline.tasks import splits

SPLITS = ("train", "test")


@gin.configurable(module="benchmarks")
def prepared_jpegs(directory: str = ".cache/gpu_jpegs", task_name: str = "gpu_jpegs") -> str:
  """Registers (once) and returns a task whose splits are the prepared folders `directory`/train and /test."""
  for split in SPLITS:
    if prepared.read_manifest(os.path.join(directory, split)) is None:
      raise UserError(f"No prepared JPEG split in {os.path.join(directory, split)}. Make it with `python -m "
                      f"benchmarks.gpu_data --out {directory}` on a machine with TensorFlow, and carry that folder.")
  splits.register_direct(task_name, lambda split: prepared.PreparedSource(os.path.join(directory, split)))
  return task_name
