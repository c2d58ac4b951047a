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
from shardline.core.errors import UserError
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


def log(message: str) -> None:
  """Prints from the primary process only, without breaking the progress bar."""
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


class _Loop:
  """One training run: the compiled step, the data, the schedule of logging, evaluation and checkpoints."""

  def __init__(self, run: setup_lib.RunSetup, task: str, model_dir: str, batch_size: int, eval_batch_size: int,
               splits, seed: int, checkpointer: checkpoints_lib.Checkpointer, every: Dict[str, int],
               nonfinite_policy: str, inject_nan_at_step: int, microbatches: int):
    self.run, self.model_dir, self.batch_size = run, model_dir, batch_size
    self.eval_batch_size, self.checkpointer, self.every = eval_batch_size, checkpointer, every
    self.nonfinite_policy = nonfinite_policy
    self.train_feeder = data_lib.BatchFeeder(loader.materialize(task, splits[0]), run.batch_sharding)
    self.eval_feeder = data_lib.BatchFeeder(loader.materialize(task, splits[1]), run.eval_batch_sharding)
    self.sampler = loader.StepSampler(self.train_feeder.num_examples, batch_size, seed)
    self.step_fn = step_lib.jit_train_step(
        step_lib.train_step_fn(run.model, run.tx, run.schedule, inject_nan_at_step, microbatches),
        run.partitioner, run.state_sharding, run.batch_sharding)
    self.eval_step = step_lib.jit_eval_step(run.model, run.partitioner, run.state_sharding.params,
                                            run.eval_batch_sharding)
    self.meta = {"fingerprint": run.fingerprint(),
                 "data": {"task": task, "split": splits[0], "seed": seed, "global_batch": batch_size}}
    self.summaries = None  # opened by train(), after restore_or_init has checked the MODEL_DIR
    self.device_kind = jax.devices()[0].device_kind
    # Gloo (multi-process CPU) pairs collectives by order, and asynchronous dispatch lets a process reach the
    # next program's collectives (or orbax's barriers) while its peer is still in the previous one. GPU and TPU
    # collectives are stream-ordered and need no such waits. (Simulated devices in one process need none
    # either once XLA:CPU's thread pools have headroom: runtime.set_cpu_xla_flags.)
    self.serialize_steps = jax.process_count() > 1 and jax.default_backend() == "cpu"
    self.last_train: Dict[str, float] = {}
    self.last_eval: Dict[str, float] = {}

  def restore_or_init(self, seed: int):
    """The latest checkpoint's state and step, or a fresh state at step 0."""
    run = self.run
    latest = self.checkpointer.latest_step()
    if latest is None:
      return train_state.init_state(run.model, run.tx, run.model.batch_spec(1), run.partitioner,
                                    run.state_sharding, seed), 0
    self.checkpointer.check_fingerprint(latest, run.fingerprint())
    log(f"Resuming from checkpoint step {latest} in {self.checkpointer.directory}")
    return self.checkpointer.restore(latest, run.abstract_state, run.state_sharding), latest

  def compile(self, state, step: int):
    start = time.time()
    compiled = self.step_fn.lower(state, self.train_feeder.train_batch(self.sampler, step)).compile()
    self.flops = flops_lib.compiled_flops(compiled)
    log(f"Compiled the train step in {time.time() - start:.1f}s; {(self.flops or 0) / 1e9:.3f} GFLOP per "
        "device per step (matmuls counted in the compiled program).")
    return compiled

  def _log_window(self, pending, done: int, seconds: float, steps: int) -> None:
    totals = None
    for metrics in pending:
      totals = summaries_lib.accumulate(totals, metrics)
    values = {k: float(s / max(w, 1e-12)) for k, (s, w) in totals.items()}
    nonfinite = int(round(float(totals["nonfinite"][0])))
    values.pop("nonfinite")
    per_step = seconds / max(steps, 1)
    values.update(step_time=per_step, examples_per_sec=self.batch_size / per_step,
                  tflops_per_device=(self.flops or 0) / per_step / 1e12,
                  mfu=flops_lib.mfu(self.flops, per_step, self.device_kind))
    self.last_train = values
    self.summaries.write("train", done, values)
    log(summaries_lib.format_line(done, values))
    if nonfinite:
      self._handle_nonfinite(done, nonfinite)

  def _handle_nonfinite(self, step: int, count: int) -> None:
    if self.nonfinite_policy == "skip":
      log(f"warning: {count} update(s) up to step {step} had a non-finite loss or gradient and were skipped.")
      return
    self.checkpointer.wait()
    raise UserError(
        f"The loss or gradients became NaN/Inf at or before step {step} ({count} step(s) in the last logging "
        f"window); training stopped and the metrics so far are written. The non-finite update was not applied "
        f"and nothing non-finite was checkpointed; the latest checkpoint is step {self.checkpointer.latest_step()}. "
        "Lower the learning rate, enable clipping (optimizer.make_optimizer.clip_norm), or set "
        "--gin.train.nonfinite_policy=\"'skip'\" to skip such updates.")

  def train(self, state, compiled, start_step: int, steps: int):
    self.summaries = summaries_lib.Summaries(self.model_dir, jax.process_index() == 0)
    pending, window_start, window_step = [], time.time(), start_step
    bar = tqdm.tqdm(total=steps, initial=start_step, dynamic_ncols=True, desc="train",
                    disable=not (jax.process_index() == 0 and sys.stderr.isatty()))
    try:
      for step in range(start_step, steps):
        state, metrics = compiled(state, self.train_feeder.train_batch(self.sampler, step))
        if self.serialize_steps:
          jax.block_until_ready((state, metrics))
        pending.append(metrics)
        bar.update(1)
        done = step + 1
        if done % self.every["log"] == 0 or done == steps:
          self._log_window(pending, done, time.time() - window_start, done - window_step)
          bar.set_postfix(loss=f"{self.last_train['loss']:.4f}")
          pending, window_start, window_step = [], time.time(), done
        if done % self.every["eval"] == 0 or done == steps:
          evaluated = run_eval(self.eval_step, state.params, self.eval_feeder, self.eval_batch_size)
          self.summaries.write("eval", done, {f"eval_{k}": v for k, v in evaluated.items()})
          self.last_eval = {f"eval_{k}": v for k, v in self.run.model.headline(evaluated).items()}
          log(summaries_lib.format_line(done, self.last_eval))
        if done % self.every["checkpoint"] == 0 or done == steps:
          self.checkpointer.save(done, state, self.meta)
          if self.serialize_steps:
            self.checkpointer.wait()  # orbax's barriers are collectives too
    finally:
      bar.close()
      self.summaries.close()
    return state


@gin.configurable("train", denylist=["devices"])
def train(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, steps: int = gin.REQUIRED, eval_batch_size: Optional[int] = None,
          train_split: str = "train", eval_split: str = "test", log_every: int = 50, eval_every: int = 500,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          seed: int = 0, nonfinite_policy: str = "stop", inject_nan_at_step: int = -1, microbatches: int = 1,
          devices=None) -> Dict[str, Any]:
  """Trains `model` on `task`, resuming from the latest checkpoint in `model_dir`.

  Args:
    model: the model (a `BaseModel`).
    task: the name of a registered seqio task.
    model_dir: where checkpoints, TensorBoard summaries, metrics and the gin configs go.
    batch_size: the global batch size.
    steps: train until this step.
    eval_batch_size: batch size of evaluation; the training batch size by default.
    train_split, eval_split: task splits.
    log_every: steps between metrics lines (and rows of MODEL_DIR/metrics/train.jsonl).
    eval_every: steps between evaluations.
    checkpoint_every: steps between checkpoints.
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background while training continues.
    seed: seeds parameters, the data order and the step RNG.
    nonfinite_policy: 'stop' (after writing the metrics, with a clear message) or 'skip' (count and continue)
      when the loss or gradients are NaN or Inf. Non-finite updates are never applied or checkpointed.
    inject_nan_at_step: fault injection for testing the policy; -1 disables it.
    microbatches: gradient accumulation: each step's global batch runs as this many strided microbatches, one
      after another, for one optimizer update (training/microbatches.py). It must divide the per-device batch.
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
  data_lib.check_microbatches(batch_size, microbatches, run.partitioner)
  loader.materialize(task, train_split, max_examples=1)  # a missing task or split stops before anything is written
  if async_checkpoints and jax.process_count() > 1 and jax.default_backend() == "cpu":
    # An asynchronous save runs orbax's cross-process collectives on a background thread while the next
    # step runs its own, and gloo (CPU) pairs collectives by order; GPU and TPU runs keep saving in the background.
    log("Multi-process CPU run: checkpoints are saved synchronously.")
    async_checkpoints = False
  checkpointer = checkpoints_lib.Checkpointer(model_dir, keep_checkpoints, checkpoint_every, async_checkpoints)
  try:
    loop = _Loop(run, task, model_dir, batch_size, eval_batch_size, (train_split, eval_split), seed,
                 checkpointer, {"log": log_every, "eval": eval_every, "checkpoint": checkpoint_every},
                 nonfinite_policy, inject_nan_at_step, microbatches)
    state, start_step = loop.restore_or_init(seed)
    _write_text(os.path.join(model_dir, "config.gin"), gin.config_str())
    log(f"Training {type(model).__name__} on {task!r} | mesh {mesh_lib.describe(run.partitioner.mesh)} | "
        f"rules {rules_lib.rule_set_name(run.partitioner.rules)} | batch {batch_size} | "
        f"steps {start_step}->{steps} | MODEL_DIR {os.path.abspath(model_dir)}")
    state = loop.train(state, loop.compile(state, start_step), start_step, steps)
  finally:
    checkpointer.close()
  _write_text(os.path.join(model_dir, "operative_config.gin"), gin.operative_config_str())
  return {"step": steps, "train": loop.last_train, "eval": loop.last_eval, "skipped": int(state.skipped),
          "wall_seconds": time.time() - start_time, "model_dir": os.path.abspath(model_dir),
          "checkpoints": checkpointer.directory}
