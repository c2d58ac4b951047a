"""`train`, bound by gin: checks everything, sets the run up, restores or initialises, and runs the step loop."""
import contextlib
import dataclasses
import time
from typing import Any, Dict, Mapping, Optional

import gin
import jax

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.data import order
from shardline.data.feeder import SplitFeeder
from shardline.data.settings import StreamSettings
from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.tasks import splits
from shardline.training.evaluation import evaluators as evaluators_lib
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.lifecycle import goodput as goodput_lib
from shardline.training.lifecycle import preemption as preemption_lib
from shardline.training.lifecycle import profiling
from shardline.training.lifecycle import storage
from shardline.training.lifecycle import summaries as summaries_lib
from shardline.training.lifecycle import watchdog as watchdog_lib
from shardline.training.loop import step_loop
from shardline.training.loop.settings import RunSettings
from shardline.training.planning import mfu
from shardline.training.state import batch_checks
from shardline.training.state import run_setup
from shardline.training.state import step as step_lib
from shardline.training.state import train_state
from shardline.training.transfer import distill as distill_lib
from shardline.training.transfer import init_from as init_from_lib

NONFINITE_POLICIES = ("stop", "skip")
log = step_loop.log


@dataclasses.dataclass
class _Inputs:
  """What the run reads, opened and checked before anything is written."""
  feeder: SplitFeeder
  sampler: order.StepSampler
  eval_data: evaluators_lib.EvalData
  evaluators: Dict[str, evaluators_lib.Evaluator]
  init_source: Optional[init_from_lib.Source]
  teacher: Optional[distill_lib.Teacher]


def _validate(batch_size: int, steps: int, schedule: step_loop.Schedule, nonfinite_policy: str) -> None:
  for name, value in (("train.batch_size", batch_size), ("train.steps", steps), ("train.log_every", schedule.log),
                      ("train.eval_every", schedule.eval), ("train.checkpoint_every", schedule.checkpoint)):
    if value <= 0:
      raise UserError(f"{name} = {value}; it must be a positive integer.")
  if nonfinite_policy not in NONFINITE_POLICIES:
    raise UserError(f"train.nonfinite_policy = {nonfinite_policy!r}; choose one of {NONFINITE_POLICIES}.")


def _write_text(store: storage.Store, path: str, text: str) -> None:
  if jax.process_index() == 0:
    store.run(f"writing {path.rsplit('/', 1)[-1]}", lambda: paths.write_text(path, text))


def _open_inputs(task: str, split: str, run: run_setup.RunSetup, batch_size: int, eval_batch_size: int, seed: int,
                 evaluators: Dict[str, evaluators_lib.Evaluator], init_from: Optional[init_from_lib.InitFrom],
                 distill: Optional[distill_lib.Distill], model_dir: str) -> _Inputs:
  """Opens the training split (preparing it on first use), checks every evaluator, the init_from checkpoint and
  the distillation teacher: a missing task, split, cache or checkpoint stops here, before anything is written."""
  settings = StreamSettings()
  feeder = splits.open_split(task, split, settings)
  eval_data = evaluators_lib.EvalData(task, run, eval_batch_size, settings)
  for evaluator in evaluators.values():
    evaluator.check(eval_data)
  init_source = None
  if init_from is not None and checkpoints_lib.Checkpointer(model_dir, read_only=True).latest_step() is None:
    init_source = init_from_lib.prepare(init_from, run)  # MODEL_DIR's own checkpoints win over init_from
  teacher = distill_lib.prepare(distill, run) if distill is not None else None
  return _Inputs(feeder, order.StepSampler(feeder.num_examples, batch_size, seed), eval_data, evaluators,
                 init_source, teacher)


def _restore_or_init(run: run_setup.RunSetup, checkpointer: checkpoints_lib.Checkpointer, seed: int,
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


def _compile(step_fn, state, batch, *step_inputs):
  start = time.time()
  compiled = step_fn.lower(state, batch, *step_inputs).compile()
  flops = mfu.compiled_flops(compiled)
  log(f"Compiled the train step in {time.time() - start:.1f}s; {(flops or 0) / 1e9:.3f} GFLOP per device per "
      "step (matmuls counted in the compiled program).")
  return compiled, flops


def _start_line(model: BaseModel, task: str, run: run_setup.RunSetup, batch_size: int, microbatches: int,
                start_step: int, steps: int, model_dir: str) -> str:
  return (f"Training {type(model).__name__} on {task!r} | mesh {mesh_lib.describe(run.partitioner.mesh)} | "
          f"rules {rules_lib.rule_set_name(run.partitioner.rules)} | batch {batch_size}"
          + (f" in {microbatches} microbatches" if microbatches > 1 else "")
          + (" | trainable {:,} of {:,} parameters".format(*run.trainable()) if run.frozen else "")
          + f" | steps {start_step}->{steps} | MODEL_DIR {paths.display(model_dir)}")


@gin.configurable("train", denylist=["devices"])
def train(model: BaseModel = gin.REQUIRED, task: str = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, steps: int = gin.REQUIRED, train_split: str = "train",
          eval_batch_size: Optional[int] = None, seed: int = 0, microbatches: int = 1,
          nonfinite_policy: str = "stop", log_every: int = 50, eval_every: int = 500, checkpoint_every: int = 500,
          evaluators: Optional[Mapping[str, evaluators_lib.Evaluator]] = None,
          init_from: Optional[init_from_lib.InitFrom] = None, distill: Optional[distill_lib.Distill] = None,
          devices=None) -> Dict[str, Any]:
  """Trains `model` on `task`, resuming from the latest checkpoint in `model_dir`.

  The groups train.checkpointing, train.storage, train.profile, train.watchdog and train.faults
  (training/loop/settings.py) hold the rest of the run's settings.

  Args:
    model: the model (a `BaseModel`).
    task: the name of a registered seqio task.
    model_dir: where checkpoints, TensorBoard summaries, metrics, profiles, hang dumps and the gin configs go: a
      local folder, gs://bucket/path or s3://bucket/path.
    batch_size: the global batch size.
    steps: train until this step.
    train_split: the split trained on.
    eval_batch_size: batch size of evaluation; the training batch size by default.
    seed: seeds parameters, the data order and the step RNG.
    microbatches: gradient accumulation: each step's global batch runs as this many strided microbatches, one
      after another, for one optimizer update (training/state/microbatches.py). It must divide the per-device
      batch.
    nonfinite_policy: 'stop' (after writing the metrics, with a clear message) or 'skip' (count and continue)
      when the loss or gradients are NaN or Inf. Non-finite updates are never applied or checkpointed.
    log_every: steps between metrics lines (and rows of MODEL_DIR/metrics/train.jsonl).
    eval_every: steps between evaluations of evaluators that set no cadence of their own.
    checkpoint_every: steps between checkpoints.
    evaluators: name -> evaluator (training/evaluation/evaluators.py: @split_eval(), @fewshot()), each run every
      its own `every` steps (default `eval_every`) and at the end; its metrics are prefixed with its name. None:
      one, 'eval', the model's metrics on evaluators.split_eval.split.
    init_from: start from another run's checkpoint (`@init_from()`, training/transfer/init_from.py) when
      MODEL_DIR has no checkpoint of its own.
    distill: distil from a frozen teacher (`@distill()`, training/transfer/distill.py).
    devices: devices to use instead of all of them (tests).

  Returns:
    A summary: final step, train and eval metrics, wall time, goodput, output paths, and where a preemption
    stopped the run (None if it finished).
  """
  goodput = goodput_lib.Goodput()
  schedule = step_loop.Schedule(log_every, eval_every, checkpoint_every)
  _validate(batch_size, steps, schedule, nonfinite_policy)
  settings = RunSettings.from_gin(steps)
  model_dir = paths.check_url(model_dir, "MODEL_DIR (train.model_dir)")
  eval_batch_size = eval_batch_size or batch_size
  evaluators = {"eval": evaluators_lib.SplitEval()} if evaluators is None else dict(evaluators)
  evaluators_lib.check(evaluators, "train.evaluators")
  run = run_setup.build(model, steps, batch_size, seed, devices)
  batch_checks.check_batch_divisible(batch_size, run.partitioner, "train.batch_size")
  batch_checks.check_batch_divisible(eval_batch_size, run.partitioner, "train.eval_batch_size")
  batch_checks.check_microbatches(batch_size, microbatches, run.partitioner)
  inputs = _open_inputs(task, train_split, run, batch_size, eval_batch_size, seed, evaluators, init_from, distill,
                        model_dir)
  paths.check_writable(model_dir, "MODEL_DIR (train.model_dir)")
  async_save = settings.checkpointing.async_save
  if async_save and jax.process_count() > 1 and jax.default_backend() == "cpu":
    # An asynchronous save runs orbax's cross-process collectives on a background thread while the next
    # step runs its own, and gloo (CPU) pairs collectives by order; GPU and TPU runs keep saving in the background.
    log("Multi-process CPU run: checkpoints are saved synchronously.")
    async_save = False
  primary = jax.process_index() == 0
  summaries = None
  watchdog = watchdog_lib.Watchdog(paths.join(model_dir, "hangs"), jax.process_index(), settings.watchdog.timeout_s,
                                   settings.watchdog.action)
  store = storage.Store(model_dir, settings.storage.timeout_s, log, on_wait=watchdog.progress)
  checkpointer = checkpoints_lib.Checkpointer(model_dir, settings.checkpointing.keep, checkpoint_every, async_save,
                                              store=store)
  try:
    with preemption_lib.PreemptionWatch(settings.checkpointing.save_on_preemption) as preemption, \
        contextlib.ExitStack() as stack:
      with goodput.measure("restore"):
        state, start_step = _restore_or_init(run, checkpointer, seed, inputs.init_source, init_from is not None)
      teacher_params = ()
      if inputs.teacher is not None:
        with goodput.measure("restore"):
          teacher_params = (inputs.teacher.load(),)
        log(inputs.teacher.describe())
      _write_text(store, paths.join(model_dir, "config.gin"), gin.config_str())
      log(_start_line(model, task, run, batch_size, microbatches, start_step, steps, model_dir))
      step_fn = step_lib.jit_train_step(
          step_lib.train_step_fn(run.model, run.tx, run.schedule, settings.faults.nan_at_step, microbatches,
                                 run.frozen, distill),
          run.partitioner, run.state_sharding, run.batch_sharding,
          inputs.teacher.params_sharding if inputs.teacher else None)
      # Described before the loader's workers start: describing the image transforms imports OpenCV, whose loader
      # edits sys.path while it runs, and a worker spawned then would inherit that sys.path.
      log(inputs.feeder.describe())
      stream = stack.enter_context(inputs.feeder.train_stream(inputs.sampler, start_step, steps, run.batch_sharding))
      with goodput.measure("compile"):
        compiled, flops = _compile(step_fn, state, stream.peek(start_step), *teacher_params)
      summaries = summaries_lib.Summaries(model_dir, primary, store)
      profiler = profiling.StepProfiler(model_dir, settings.profile.steps, primary or settings.profile.every_process,
                                        store)
      meta = {"fingerprint": run.fingerprint(),
              "data": {"task": task, "split": train_split, "seed": seed, "global_batch": batch_size}}
      loop = step_loop.TrainingLoop(
          run, stream, inputs.sampler, inputs.evaluators, inputs.eval_data, checkpointer, store, meta, schedule,
          nonfinite_policy, summaries, step_loop.Services(preemption, watchdog.start(), profiler, goodput), flops,
          settings.faults.stall_point(), teacher_params)
      outcome = loop.train(state, compiled, start_step, steps)
      if profiler.published:
        first = settings.profile.steps[0]
        log(f"Profile of steps {first}..{first + settings.profile.steps[1] - 1} written to {profiler.published}; "
            f"open it with: tensorboard --logdir {paths.display(model_dir)} (Profile tab)")
      spent = goodput.summary()
      summaries.write("goodput", outcome.step, goodput_lib.Goodput.scalars(spent))
      log(goodput_lib.Goodput.table(spent))
  except storage.StorageUnavailable:
    # The store is gone: nothing more can be written, so nothing waits for it or flushes to it.
    checkpointer.abandon()
    if summaries is not None:
      summaries.abandon()
    raise
  finally:
    watchdog.stop()
    checkpointer.close()
    if summaries is not None:
      summaries.close()
  _write_text(store, paths.join(model_dir, "operative_config.gin"), gin.operative_config_str())
  return {"step": outcome.step, "train": loop.last_train, "eval": loop.last_eval, "skipped": int(outcome.state.skipped),
          "wall_seconds": spent["total"], "goodput": spent, "model_dir": paths.display(model_dir),
          "checkpoints": checkpointer.directory, "preempted_at": outcome.preempted_at, "saved_at": outcome.saved_at}
