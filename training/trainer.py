"""`train`, bound by gin: checks everything, sets the run up, restores or initialises, and runs the step loop."""
import contextlib
import time
from typing import Any, Dict, Mapping, Optional, Sequence

import gin
import jax

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.data import order
from shardline.data import sources
from shardline.training import checkpoints as checkpoints_lib
from shardline.training import data as data_lib
from shardline.training import distill as distill_lib
from shardline.training import evaluators as evaluators_lib
from shardline.training import flops as flops_lib
from shardline.training import goodput as goodput_lib
from shardline.training import init_from as init_from_lib
from shardline.training import loop as loop_lib
from shardline.training import preemption as preemption_lib
from shardline.training import profiling
from shardline.training import setup as setup_lib
from shardline.training import step as step_lib
from shardline.training import summaries as summaries_lib
from shardline.training import train_state
from shardline.training import watchdog as watchdog_lib

NONFINITE_POLICIES = ("stop", "skip")
log = loop_lib.log


def _validate(batch_size: int, steps: int, schedule: loop_lib.Schedule, nonfinite_policy: str) -> None:
  for name, value in (("train.batch_size", batch_size), ("train.steps", steps), ("train.log_every", schedule.log),
                      ("train.eval_every", schedule.eval), ("train.checkpoint_every", schedule.checkpoint)):
    if value <= 0:
      raise UserError(f"{name} = {value}; it must be a positive integer.")
  if nonfinite_policy not in NONFINITE_POLICIES:
    raise UserError(f"train.nonfinite_policy = {nonfinite_policy!r}; choose one of {NONFINITE_POLICIES}.")


def _write_text(path: str, text: str) -> None:
  if jax.process_index() == 0:
    paths.write_text(path, text)


def _init_source(init_from: Optional[init_from_lib.InitFrom], run: setup_lib.RunSetup,
                 model_dir: str) -> Optional[init_from_lib.Source]:
  """The checkpoint to initialise from, checked and mapped; None if there is none or MODEL_DIR has its own."""
  if init_from is None or checkpoints_lib.Checkpointer(model_dir, read_only=True).latest_step() is not None:
    return None
  return init_from_lib.prepare(init_from, run)


def _restore_or_init(run: setup_lib.RunSetup, checkpointer: checkpoints_lib.Checkpointer, seed: int,
                     init_source: Optional[init_from_lib.Source], init_from_set: bool):
  """MODEL_DIR's latest checkpoint and its step; else `init_source` at step 0; else a fresh state at step 0.
  One log line names which."""
  latest = checkpointer.latest_step()
  if latest is not None:
    checkpointer.check_fingerprint(latest, run.fingerprint())
    log(f"Resuming from checkpoint step {latest} in {checkpointer.directory}"
        + (" (train.init_from is not used: this MODEL_DIR has its own checkpoints)" if init_from_set else ""))
    return checkpointer.restore(latest, run.abstract_state, run.state_sharding), latest
  fresh = train_state.init_state(run.model, run.tx, run.model.batch_spec(1), run.partitioner,
                                 run.state_sharding, seed)
  if init_source is None:
    log(f"Starting from scratch (parameters initialised with seed {seed})")
    return fresh, 0
  state = init_source.load(run, fresh)
  log(init_source.describe())
  return state, 0


def _describe(source) -> str:
  describe = getattr(source, "describe", None)
  return describe() if describe is not None else f"{len(source):,} examples"


def _compile(step_fn, state, batch, *step_inputs):
  start = time.time()
  compiled = step_fn.lower(state, batch, *step_inputs).compile()
  flops = flops_lib.compiled_flops(compiled)
  log(f"Compiled the train step in {time.time() - start:.1f}s; {(flops or 0) / 1e9:.3f} GFLOP per device per "
      "step (matmuls counted in the compiled program).")
  return compiled, flops


@gin.configurable("train", denylist=["devices"])
def train(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, steps: int = gin.REQUIRED, eval_batch_size: Optional[int] = None,
          train_split: str = "train", eval_split: str = "test",
          evaluators: Optional[Mapping[str, evaluators_lib.Evaluator]] = None, log_every: int = 50,
          eval_every: int = 500,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          seed: int = 0, nonfinite_policy: str = "stop", microbatches: int = 1, save_on_preemption: bool = True,
          profile_steps: Optional[Sequence[int]] = None, profile_every_process: bool = False,
          hang_timeout_s: Optional[float] = None, hang_action: str = "dump",
          init_from: Optional[init_from_lib.InitFrom] = None, distill: Optional[distill_lib.Distill] = None,
          inject_nan_at_step: int = -1,
          inject_stall: Optional[Sequence[float]] = None, devices=None) -> Dict[str, Any]:
  """Trains `model` on `task`, resuming from the latest checkpoint in `model_dir`.

  Args:
    model: the model (a `BaseModel`).
    task: the name of a registered seqio task.
    model_dir: where checkpoints, TensorBoard summaries, metrics, profiles, hang dumps and the gin configs go: a
      local folder, gs://bucket/path or s3://bucket/path.
    batch_size: the global batch size.
    steps: train until this step.
    eval_batch_size: batch size of evaluation; the training batch size by default.
    train_split: the split trained on.
    eval_split: the split of the default evaluator, `eval`, when `evaluators` is None.
    evaluators: name -> evaluator (training/evaluators.py: @split_eval(), @fewshot()), each run every its own
      `every` steps (default `eval_every`) and at the end; its metrics are prefixed with its name.
    log_every: steps between metrics lines (and rows of MODEL_DIR/metrics/train.jsonl).
    eval_every: steps between evaluations of evaluators that set no cadence of their own.
    checkpoint_every: steps between checkpoints.
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background while training continues.
    seed: seeds parameters, the data order and the step RNG.
    nonfinite_policy: 'stop' (after writing the metrics, with a clear message) or 'skip' (count and continue)
      when the loss or gradients are NaN or Inf. Non-finite updates are never applied or checkpointed.
    microbatches: gradient accumulation: each step's global batch runs as this many strided microbatches, one
      after another, for one optimizer update (training/microbatches.py). It must divide the per-device batch.
    save_on_preemption: on SIGTERM, agree on a step across processes, save it, and exit with code 75
      (training/preemption.py).
    profile_steps: (first step, number of steps) to trace with the XProf profiler into MODEL_DIR/plugins/profile.
    profile_every_process: trace on every process instead of process 0 only.
    hang_timeout_s: seconds without progress before every process dumps its threads' stacks to stderr and
      MODEL_DIR/hangs/; None: 20 x the median step time, at least 600 s (training/watchdog.py).
    hang_action: 'dump' (and keep waiting) or 'abort' (exit with code 124 after the dump).
    init_from: start from another run's checkpoint (`@init_from()`, training/init_from.py) when MODEL_DIR has no
      checkpoint of its own.
    distill: distil from a frozen teacher (`@distill()`, training/distill.py).
    inject_nan_at_step: fault injection for testing the non-finite policy; -1 disables it.
    inject_stall: fault injection for the watchdog's and preemption's tests: (step, seconds) stops the host before
      that step; (step, seconds, 'eval') before the evaluation after it.
    devices: devices to use instead of all of them (tests).

  Returns:
    A summary: final step, train and eval metrics, wall time, goodput, output paths, and where a preemption
    stopped the run (None if it finished).
  """
  goodput = goodput_lib.Goodput()
  schedule = loop_lib.Schedule(log_every, eval_every, checkpoint_every)
  _validate(batch_size, steps, schedule, nonfinite_policy)
  profiling.check_steps(profile_steps, steps)
  watchdog_lib.check_settings(hang_timeout_s, hang_action)
  model_dir = paths.check_url(model_dir, "MODEL_DIR (train.model_dir)")
  eval_batch_size = eval_batch_size or batch_size
  evaluators = {"eval": evaluators_lib.SplitEval(eval_split)} if evaluators is None else dict(evaluators)
  evaluators_lib.check(evaluators, "train.evaluators")
  run = setup_lib.build(model, steps, batch_size, seed, devices)
  data_lib.check_batch_divisible(batch_size, run.partitioner, "train.batch_size")
  data_lib.check_batch_divisible(eval_batch_size, run.partitioner, "train.eval_batch_size")
  data_lib.check_microbatches(batch_size, microbatches, run.partitioner)
  settings = sources.StreamSettings()
  # The training split is opened (and prepared on first use) before anything is written: a missing task, split
  # or cache stops here.
  train_feeder = data_lib.open_split(task, train_split, settings)
  sampler = order.StepSampler(train_feeder.num_examples, batch_size, seed)
  eval_data = evaluators_lib.EvalData(task, run, eval_batch_size, settings)
  for evaluator in evaluators.values():
    evaluator.check(eval_data)
  init_source = _init_source(init_from, run, model_dir)
  teacher = distill_lib.prepare(distill, run) if distill is not None else None
  paths.check_writable(model_dir, "MODEL_DIR (train.model_dir)")
  if async_checkpoints and jax.process_count() > 1 and jax.default_backend() == "cpu":
    # An asynchronous save runs orbax's cross-process collectives on a background thread while the next
    # step runs its own, and gloo (CPU) pairs collectives by order; GPU and TPU runs keep saving in the background.
    log("Multi-process CPU run: checkpoints are saved synchronously.")
    async_checkpoints = False
  checkpointer = checkpoints_lib.Checkpointer(model_dir, keep_checkpoints, checkpoint_every, async_checkpoints)
  primary = jax.process_index() == 0
  summaries = None
  watchdog = watchdog_lib.Watchdog(paths.join(model_dir, "hangs"), jax.process_index(), hang_timeout_s, hang_action)
  try:
    with preemption_lib.PreemptionWatch(save_on_preemption) as preemption, contextlib.ExitStack() as stack:
      with goodput.measure("restore"):
        state, start_step = _restore_or_init(run, checkpointer, seed, init_source, init_from is not None)
      teacher_params = ()
      if teacher is not None:
        with goodput.measure("restore"):
          teacher_params = (teacher.load(),)
        log(teacher.describe())
      _write_text(paths.join(model_dir, "config.gin"), gin.config_str())
      log(f"Training {type(model).__name__} on {task!r} | mesh {mesh_lib.describe(run.partitioner.mesh)} | "
          f"rules {rules_lib.rule_set_name(run.partitioner.rules)} | batch {batch_size}"
          + (f" in {microbatches} microbatches" if microbatches > 1 else "")
          + (" | trainable {:,} of {:,} parameters".format(*run.trainable()) if run.frozen else "")
          + f" | steps {start_step}->{steps} | MODEL_DIR {paths.display(model_dir)}")
      step_fn = step_lib.jit_train_step(
          step_lib.train_step_fn(run.model, run.tx, run.schedule, inject_nan_at_step, microbatches, run.frozen,
                                 distill),
          run.partitioner, run.state_sharding, run.batch_sharding, teacher.params_sharding if teacher else None)
      stream = stack.enter_context(train_feeder.train_stream(sampler, start_step, steps, run.batch_sharding))
      transform = getattr(settings.train_transform, "describe", None)
      log(f"Data: {_describe(train_feeder.source)} | {settings.workers} loader worker(s), {settings.prefetch} "
          "batch(es) prefetched to the devices" + (f" | {transform()}" if transform is not None else ""))
      with goodput.measure("compile"):
        compiled, flops = _compile(step_fn, state, stream.peek(start_step), *teacher_params)
      summaries = summaries_lib.Summaries(model_dir, primary)
      profiler = profiling.StepProfiler(model_dir, profile_steps, primary or profile_every_process)
      meta = {"fingerprint": run.fingerprint(),
              "data": {"task": task, "split": train_split, "seed": seed, "global_batch": batch_size}}
      loop = loop_lib.TrainingLoop(
          run, stream, sampler, evaluators, eval_data, checkpointer, meta, schedule,
          nonfinite_policy, summaries, loop_lib.Services(preemption, watchdog.start(), profiler, goodput), flops,
          (tuple(inject_stall) + ("step",))[:3] if inject_stall else None, teacher_params)
      outcome = loop.train(state, compiled, start_step, steps)
      if profiler.published:
        log(f"Profile of steps {profile_steps[0]}..{profile_steps[0] + profile_steps[1] - 1} written to "
            f"{profiler.published}; open it with: tensorboard --logdir {paths.display(model_dir)} (Profile tab)")
      spent = goodput.summary()
      summaries.write("goodput", outcome.step, goodput_lib.Goodput.scalars(spent))
      log(goodput_lib.Goodput.table(spent))
  finally:
    watchdog.stop()
    checkpointer.close()
    if summaries is not None:
      summaries.close()
  _write_text(paths.join(model_dir, "operative_config.gin"), gin.operative_config_str())
  return {"step": outcome.step, "train": loop.last_train, "eval": loop.last_eval, "skipped": int(outcome.state.skipped),
          "wall_seconds": spent["total"], "goodput": spent, "model_dir": paths.display(model_dir),
          "checkpoints": checkpointer.directory, "preempted_at": outcome.preempted_at, "saved_at": outcome.saved_at}
