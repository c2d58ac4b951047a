"""`shardline infer`: restore a checkpoint and run the model's own analysis (plots and tables)."""
from typing import Any, Dict, Optional

import gin

from shardline.models.base import BaseModel
from shardline.partitioning.context import use_partitioner
from shardline.core import paths
from shardline.core.errors import UserError
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.tasks import splits
from shardline.training.state import batch_checks
from shardline.training.state import run_setup as setup_lib


@gin.configurable("infer", denylist=["devices"])
def infer(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, split: str = "test", output_dir: Optional[str] = None,
          devices=None) -> Dict[str, Any]:
  """Restores the latest checkpoint in `model_dir` and calls `model.analyze` on `split`.

  Outputs go to `output_dir` (MODEL_DIR/analysis by default); nothing else in MODEL_DIR is written.
  """
  model_dir = paths.check_url(model_dir, "MODEL_DIR (infer.model_dir)")
  checkpointer = checkpoints_lib.Checkpointer(model_dir, async_save=False, read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise UserError(f"No checkpoint in {checkpointer.directory}; train first, or point --gin.MODEL_DIR at one.")
    run = setup_lib.build(model, total_steps=max(steps[-1], 1), global_batch=batch_size, devices=devices)
    batch_checks.check_batch_divisible(batch_size, run.partitioner, "infer.batch_size")
    checkpointer.check_fingerprint(steps[-1], run.fingerprint())
    state = checkpointer.restore(steps[-1], run.abstract_state, run.state_sharding)
  finally:
    checkpointer.close()
  output_dir = paths.check_url(output_dir or paths.join(model_dir, "analysis"), "infer.output_dir")
  feeder = splits.open_split(task, split)
  with use_partitioner(run.partitioner), paths.staged_dir(output_dir) as local_dir:
    try:
      result = model.analyze(state.params, feeder.eval_batches(batch_size, run.eval_batch_sharding), local_dir)
    except NotImplementedError as e:
      raise UserError(str(e)) from e
  return {"step": steps[-1], "output_dir": paths.display(output_dir), **result}
