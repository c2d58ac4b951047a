"""The training loop, bound by gin as `train`."""
import os
import sys
import time
from typing import Any, Dict, Optional

import gin
import jax
import tqdm

from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.partitioning.errors import UserError
from shardline.tasks import loader
from shardline.training import checkpoints as checkpoints_lib
from shardline.training import data as data_lib
from shardline.training import flops as flops_lib
from shardline.training import setup as setup_lib
from shardline.training import step as step_lib
from shardline.training import summaries as summaries_lib
from shardline.training import train_state
from shardline.training.evaluate import run_eval

NONFINITE_POLICIES = ("stop", "skip")


def _log(message: str) -> None:
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def _validate(batch_size: int, steps: int, log_every: int, eval_every: int, checkpoint_every: int,
              nonfinite_policy: str) -> None:
  for name, value in (("train.batch_size", batch_size), ("train.steps", steps), ("train.log_every", log_every),
                      ("train.eval_every", eval_every), ("train.checkpoint_every", checkpoint_every)):
    if value <= 0:
      raise UserError(f"{name} = {value}; it must be a positive integer.")
  if nonfinite_policy not in NONFINITE_POLICIES:
    raise UserError(f"train.nonfinite_policy = {nonfinite_policy!r}; choose one of {NONFINITE_POLICIES}.")


def _write_text(path: str, text: str) -> None:
  if jax.process_index() == 0:
    with open(path, "w") as f:
      f.write(text)


def _restore_or_init(run: setup_lib.RunSetup, checkpointer: checkpoints_lib.Checkpointer, seed: int):
  latest = checkpointer.latest_step()
  if latest is None:
    state = train_state.init_state(run.model, run.tx, run.model.batch_spec(1), run.partitioner,
                                   run.state_sharding, seed)
    return state, 0
  checkpointer.check_fingerprint(latest, run.fingerprint())
  _log(f"Resuming from checkpoint step {latest} in {checkpointer.directory}")
  return checkpointer.restore(latest, run.abstract_state, run.state_sharding), latest


@gin.configurable("train", denylist=["devices"])
def train(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, steps: int = gin.REQUIRED, eval_batch_size: Optional[int] = None,
          train_split: str = "train", eval_split: str = "test", log_every: int = 50, eval_every: int = 500,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          seed: int = 0, nonfinite_policy: str = "stop", inject_nan_at_step: int = -1,
          devices=None) -> Dict[str, Any]:
  """Trains `model` on `task`, resuming from the latest checkpoint in `model_dir`.

  Args:
    model: the model (a `BaseModel`).
    task: the name of a registered seqio task.
    model_dir: where checkpoints, TensorBoard summaries and the gin configs go.
    batch_size: the global batch size.
    steps: train until this step.
    eval_batch_size: batch size of evaluation; the training batch size by default.
    train_split, eval_split: task splits.
    log_every: steps between metrics lines.
    eval_every: steps between evaluations.
    checkpoint_every: steps between checkpoints.
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background while training continues.
    seed: seeds parameters, the data order and the step RNG.
    nonfinite_policy: 'stop' (after flushing metrics, with a clear message) or 'skip' (count and continue) when
      the loss or gradients are NaN or Inf. Non-finite updates are never applied or checkpointed.
    inject_nan_at_step: fault injection for testing the policy; -1 disables it.
    devices: devices to use instead of all of them (tests).

  Returns:
    A summary: final step, train and eval metrics, wall time and output paths.
  """
  start_time = time.time()
  _validate(batch_size, steps, log_every, eval_every, checkpoint_every, nonfinite_policy)
  eval_batch_size = eval_batch_size or batch_size
  run = setup_lib.build(model, steps, batch_size, seed, devices)
  data_lib.check_batch_divisible(batch_size, run.partitioner, "train.batch_size")
  data_lib.check_batch_divisible(eval_batch_size, run.partitioner, "train.eval_batch_size")
  train_feeder = data_lib.BatchFeeder(loader.materialize(task, train_split), run.batch_sharding)
  eval_feeder = data_lib.BatchFeeder(loader.materialize(task, eval_split), run.eval_batch_sharding)
  sampler = loader.StepSampler(train_feeder.num_examples, batch_size, seed)

  checkpointer = checkpoints_lib.Checkpointer(model_dir, keep_checkpoints, checkpoint_every, async_checkpoints)
  state, start_step = _restore_or_init(run, checkpointer, seed)
  primary = jax.process_index() == 0
  if primary:
    os.makedirs(model_dir, exist_ok=True)
  _write_text(os.path.join(model_dir, "config.gin"), gin.config_str())
  summaries = summaries_lib.Summaries(model_dir, primary)
  _log(f"Training {type(model).__name__} on {task!r} | mesh {mesh_lib.describe(run.partitioner.mesh)} | "
       f"rules {rules_lib.rule_set_name(run.partitioner.rules)} | "
       f"batch {batch_size} | steps {start_step}->{steps} | MODEL_DIR {os.path.abspath(model_dir)}")

  step_fn = step_lib.jit_train_step(
      step_lib.train_step_fn(model, run.tx, run.schedule, inject_nan_at_step),
      run.partitioner, run.state_sharding, run.batch_sharding)
  eval_step = step_lib.jit_eval_step(model, run.partitioner, run.state_sharding.params,
                                     run.eval_batch_sharding)
  compile_start = time.time()
  compiled = step_fn.lower(state, train_feeder.train_batch(sampler, start_step)).compile()
  flops = flops_lib.compiled_flops(compiled)
  device_kind = jax.devices()[0].device_kind
  _log(f"Compiled the train step in {time.time() - compile_start:.1f}s; "
       f"{(flops or 0) / 1e9:.3f} GFLOP per device per step (XLA cost analysis).")

  meta = {"fingerprint": run.fingerprint(), "data": {"task": task, "split": train_split, "seed": seed,
                                                     "global_batch": batch_size}}
  pending, window_start, window_step = [], time.time(), start_step
  last_train: Dict[str, float] = {}
  last_eval: Dict[str, float] = {}
  bar = tqdm.tqdm(total=steps, initial=start_step, disable=not (primary and sys.stderr.isatty()),
                  dynamic_ncols=True, desc="train")
  try:
    for step in range(start_step, steps):
      state, metrics = compiled(state, train_feeder.train_batch(sampler, step))
      pending.append(metrics)
      bar.update(1)
      done = step + 1
      if done % log_every == 0 or done == steps:
        totals = None
        for m in pending:
          totals = summaries_lib.accumulate(totals, m)
        values = {k: float(s / max(w, 1e-12)) for k, (s, w) in totals.items()}
        elapsed = time.time() - window_start
        per_step = elapsed / max(done - window_step, 1)
        values.update(step_time=per_step, examples_per_sec=batch_size / per_step,
                      tflops_per_device=(flops or 0) / per_step / 1e12,
                      mfu=flops_lib.mfu(flops, per_step, device_kind))
        nonfinite_steps = int(round(totals["nonfinite"][0]))
        values.pop("nonfinite")
        last_train = values
        summaries.write("train", done, values)
        _log(summaries_lib.format_line(done, values))
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        pending, window_start, window_step = [], time.time(), done
        if nonfinite_steps:
          _handle_nonfinite(nonfinite_policy, done, nonfinite_steps, checkpointer)
      if done % eval_every == 0 or done == steps:
        last_eval = {f"eval_{k}": v for k, v in run_eval(eval_step, state.params, eval_feeder,
                                                           eval_batch_size).items()}
        summaries.write("eval", done, last_eval)
        _log(summaries_lib.format_line(done, last_eval))
      if done % checkpoint_every == 0 or done == steps:
        checkpointer.save(done, state, meta)
  finally:
    bar.close()
    summaries.close()
    checkpointer.close()
  _write_text(os.path.join(model_dir, "operative_config.gin"), gin.operative_config_str())
  return {"step": steps, "train": last_train, "eval": last_eval, "skipped": int(state.skipped),
          "wall_seconds": time.time() - start_time, "model_dir": os.path.abspath(model_dir),
          "checkpoints": checkpointer.directory}


def _handle_nonfinite(policy: str, step: int, count: int, checkpointer: checkpoints_lib.Checkpointer) -> None:
  if policy == "skip":
    _log(f"warning: {count} update(s) before step {step} had a non-finite loss or gradient and were skipped.")
    return
  checkpointer.wait()
  latest = checkpointer.latest_step()
  raise UserError(
      f"The loss or gradients became NaN/Inf before step {step} ({count} step(s) in the last logging window); "
      f"training stopped and the metrics so far are flushed. The non-finite update was not applied and nothing "
      f"non-finite was checkpointed; the latest checkpoint is step {latest}. Lower the learning rate, enable "
      f"clipping (optimizer.make_optimizer.clip_norm), or set --gin.train.nonfinite_policy=\"'skip'\".")
