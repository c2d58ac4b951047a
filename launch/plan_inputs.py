"""The gin-bound inputs of a plan or a benchmark (configurable `plan`), importable without the data libraries."""
import gin


@gin.configurable("plan")
def plan_run(model=gin.REQUIRED, batch_size: int = gin.REQUIRED, steps: int = 1000, topology: str = ""):
  """The model, global batch size, steps and topology: runs/train.gin binds model and batch_size as for training."""
  return model, batch_size, steps, topology
