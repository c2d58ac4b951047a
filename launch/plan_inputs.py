"""The gin-bound inputs of a plan or a benchmark (configurable `plan`), importable without the data libraries."""
from typing import Any, NamedTuple

import gin

# Required values that plans and benchmarks do not read: where the run writes, which data it reads, and the
# class names that only zero-shot evaluation uses.
PLAN_NEEDS_NO = ("MODEL_DIR", "*data_dir", "*tfds_name", "precipitation_zarr.path", "*class_names")


class PlanInputs(NamedTuple):
  """What a plan or a benchmark needs of a run's gin files."""
  model: Any
  batch_size: int
  steps: int
  topology: str
  microbatches: int
  distill: Any = None  # training/distill.Distill: the teacher's parameters and forward pass are planned too


@gin.configurable("plan")
def plan_run(model=gin.REQUIRED, batch_size: int = gin.REQUIRED, steps: int = 1000, topology: str = "",
             microbatches: int = 1, distill: Any = None) -> PlanInputs:
  """The model, global batch size, steps, topology, microbatches and distillation teacher: runs/train.gin binds
  model, batch_size, microbatches and distill as for training."""
  return PlanInputs(model, batch_size, steps, topology, microbatches, distill)
