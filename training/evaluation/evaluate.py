"""`shardline eval`: restores a checkpoint and runs the run's evaluators on it (training/evaluation/evaluators.py)."""
from typing import Any, Dict, Mapping, Optional, Sequence

import gin
import jax

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.state import batch_checks
from shardline.training.evaluation import evaluators as evaluators_lib
from shardline.training.state import run_setup as setup_lib
from shardline.training.lifecycle import summaries as summaries_lib


def _report(model: BaseModel, params: Any, data: evaluators_lib.EvalData, evaluator: evaluators_lib.SplitEval,
            metrics: Dict[str, float], output_dir: str) -> Dict[str, Any]:
  """The model's tables and figures of one evaluation batch (single process: it gathers the batch to the host)."""
  batches = data.batches(evaluator.split)
  first_batch = next(batches)
  batches.close()
  with paths.staged_dir(output_dir) as staged:
    return model.eval_report(params, first_batch, metrics, staged)


@gin.configurable("evaluate", denylist=["devices", "only"])
def evaluate(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
             batch_size: int = gin.REQUIRED, step: Optional[int] = None,
             evaluators: Optional[Mapping[str, evaluators_lib.Evaluator]] = None, only: Sequence[str] = (),
             devices=None) -> Dict[str, Any]:
  """Restores a checkpoint from `model_dir` (the latest, or `step`) and runs the evaluators on it.

  The mesh may differ from the one used in training: the checkpoint is restored into this run's shardings.

  Args:
    model, task, model_dir, batch_size: as in training (gin/runs/train.gin binds them).
    step: the checkpoint step; None takes the latest.
    evaluators: name -> evaluator (training/evaluation/evaluators.py); gin/runs/train.gin binds the run's EVALUATORS.
    only: names of the evaluators to run (`shardline eval --evaluator NAME`); all of them when empty.
    devices: devices to use instead of all of them (tests).

  Returns:
    The step, and each evaluator's metrics by name (plus the model's report files under MODEL_DIR/eval).
  """
  model_dir = paths.check_url(model_dir, "MODEL_DIR (evaluate.model_dir)")
  if evaluators is None:
    evaluators = {"eval": evaluators_lib.SplitEval()}
  evaluators_lib.check(evaluators, "evaluate.evaluators")
  chosen = evaluators_lib.select(evaluators, only)
  checkpointer = checkpoints_lib.Checkpointer(model_dir, async_save=False, read_only=True)
  available = checkpointer.all_steps()
  if not available:
    raise UserError(f"No checkpoint found in {checkpointer.directory}. Train first, or point "
                    "--gin.MODEL_DIR at a directory that holds checkpoints.")
  step = available[-1] if step is None else step
  if step not in available:
    raise UserError(f"No checkpoint for step {step} in {checkpointer.directory}; available: {list(available)}.")
  try:
    run = setup_lib.build(model, total_steps=max(step, 1), global_batch=batch_size, devices=devices)
    batch_checks.check_batch_divisible(batch_size, run.partitioner, "evaluate.batch_size")
    data = evaluators_lib.EvalData(task, run, batch_size)
    for evaluator in chosen.values():  # before restoring anything
      evaluator.check(data)
    checkpointer.check_fingerprint(step, run.fingerprint())
    state = checkpointer.restore(step, run.abstract_state, run.state_sharding)
  finally:
    checkpointer.close()
  results, extra = {}, {}
  for name, evaluator in chosen.items():
    results[name] = evaluator.run(state.params, data)
    if jax.process_index() == 0:
      headline = evaluators_lib.prefixed(name, evaluator.headline(data, results[name]))
      print(f"Evaluated checkpoint step {step} of {paths.display(model_dir)} on {task} with evaluator {name!r} "
            f"(mesh {mesh_lib.describe(run.partitioner.mesh)}): "
            + summaries_lib.format_line(step, headline).split(" | ", 1)[1])
    if isinstance(evaluator, evaluators_lib.SplitEval) and jax.process_count() == 1:
      folder = "eval" if name == "eval" else f"eval_{name}"
      extra.update(_report(model, state.params, data, evaluator, results[name], paths.join(model_dir, folder)))
  return {"step": step, "results": results, **extra}
