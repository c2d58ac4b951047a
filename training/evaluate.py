"""Evaluation: metrics over a whole split, during training or from a checkpoint (`shardline eval`)."""
from typing import Any, Callable, Dict, Optional

import gin
import jax

from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.core import paths
from shardline.core.errors import UserError
from shardline.tasks import loader
from shardline.training import checkpoints as checkpoints_lib
from shardline.training import data as data_lib
from shardline.training import fewshot as fewshot_lib
from shardline.training import setup as setup_lib
from shardline.training import step as step_lib
from shardline.training import summaries as summaries_lib


def run_eval(eval_step: step_lib.PartitionedFunction, params: Any, feeder: data_lib.BatchFeeder,
             batch_size: int, on_batch: Optional[Callable[[], None]] = None) -> Dict[str, float]:
  """Exact metrics over every example of the feeder's split (padding carries weight 0); `on_batch` is called
  after each batch (the hang watchdog's progress)."""
  totals = None
  for batch in feeder.eval_batches(batch_size):
    totals = summaries_lib.accumulate(totals, eval_step(params, batch))
    if on_batch is not None:
      on_batch()
  return {k: float(s / max(w, 1e-12)) for k, (s, w) in totals.items()}


def _fewshot(spec: fewshot_lib.FewShot, model: BaseModel, run: setup_lib.RunSetup, params: Any,
             train_examples: loader.Examples, test_feeder: data_lib.BatchFeeder, batch_size: int) -> Dict[str, float]:
  train_feeder = data_lib.BatchFeeder(train_examples, run.eval_batch_sharding)
  train = fewshot_lib.features(model, run, params, train_feeder, batch_size)
  test = fewshot_lib.features(model, run, params, test_feeder, batch_size)
  results = fewshot_lib.accuracies(train, test, spec, spec.train_split)
  if jax.process_index() == 0:
    print(f"Few-shot ({spec.train_split} -> {spec.test_split}, ridge on pre-logit features, {spec.seeds} seeds): "
          + " | ".join(f"{n}-shot {100 * results[f'{n}shot']:.2f}% (+-{100 * results[f'{n}shot_std']:.2f})"
                       for n in spec.shots))
  return results


@gin.configurable("evaluate", denylist=["devices"])
def evaluate(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
             batch_size: int = gin.REQUIRED, split: str = "test", step: Optional[int] = None,
             fewshot: Optional[fewshot_lib.FewShot] = None, devices=None) -> Dict[str, Any]:
  """Restores a checkpoint from `model_dir` (the latest, or `step`) and evaluates it on `split`.

  The mesh may differ from the one used in training: the checkpoint is restored into this run's shardings.
  With `fewshot` (`@fewshot()`, training/fewshot.py) it also reports few-shot accuracies of the frozen
  pre-logit features.
  """
  model_dir = paths.check_url(model_dir, "MODEL_DIR (evaluate.model_dir)")
  checkpointer = checkpoints_lib.Checkpointer(model_dir, async_save=False, read_only=True)
  available = checkpointer.all_steps()
  if not available:
    raise UserError(f"No checkpoint found in {checkpointer.directory}. Train first, or point "
                    "--gin.MODEL_DIR at a directory that holds checkpoints.")
  step = available[-1] if step is None else step
  if step not in available:
    raise UserError(f"No checkpoint for step {step} in {checkpointer.directory}; available: {list(available)}.")
  if fewshot is not None:  # before restoring anything
    shots_from = loader.materialize(task, fewshot.train_split)
    fewshot_lib.check_shots(shots_from["label"], fewshot.shots, fewshot.train_split)
  try:
    run = setup_lib.build(model, total_steps=max(step, 1), global_batch=batch_size, devices=devices)
    data_lib.check_batch_divisible(batch_size, run.partitioner, "evaluate.batch_size")
    checkpointer.check_fingerprint(step, run.fingerprint())
    state = checkpointer.restore(step, run.abstract_state, run.state_sharding)
  finally:
    checkpointer.close()
  feeder = data_lib.BatchFeeder(loader.materialize(task, split), run.eval_batch_sharding)
  eval_step = step_lib.jit_eval_step(model, run.partitioner, run.state_sharding.params,
                                     run.eval_batch_sharding)
  metrics = run_eval(eval_step, state.params, feeder, batch_size)
  if jax.process_index() == 0:
    print(f"Evaluated checkpoint step {step} of {paths.display(model_dir)} on {task}/{split} "
          f"({feeder.num_examples} examples, mesh {mesh_lib.describe(run.partitioner.mesh)}): "
          + summaries_lib.format_line(step, model.headline(metrics)).split(" | ", 1)[1])
  extra = {}
  if fewshot is not None:
    test_feeder = feeder if fewshot.test_split == split else data_lib.BatchFeeder(
        loader.materialize(task, fewshot.test_split), run.eval_batch_sharding)
    extra["fewshot"] = _fewshot(fewshot, model, run, state.params, shots_from, test_feeder, batch_size)
  if jax.process_count() == 1:  # reports gather one batch to the host; multi-process runs print metrics only
    first_batch = next(iter(feeder.eval_batches(batch_size)))
    with paths.staged_dir(paths.join(model_dir, "eval")) as output_dir:
      extra = model.eval_report(state.params, first_batch, metrics, output_dir)
  return {"step": step, "split": split, "metrics": metrics, "num_examples": feeder.num_examples, **extra}
