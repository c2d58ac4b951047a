"""The step loop of `train`: steps, metrics windows, evaluations, checkpoints, preemption, profiles and hangs."""
import dataclasses
import sys
import time
from typing import Any, Dict, List, Optional

import jax
import tqdm

from shardline.core.errors import UserError
from shardline.data import order
from shardline.data import pipeline
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.evaluation import evaluators as evaluators_lib
from shardline.training.planning import mfu
from shardline.training.lifecycle import goodput as goodput_lib
from shardline.training.lifecycle import preemption as preemption_lib
from shardline.training.lifecycle import profiling
from shardline.training.lifecycle import storage
from shardline.training.state import run_setup as setup_lib
from shardline.training.lifecycle import summaries as summaries_lib
from shardline.training.lifecycle import watchdog as watchdog_lib


def log(message: str) -> None:
  """Prints from the primary process only, without breaking the progress bar."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


@dataclasses.dataclass
class Schedule:
  """Steps between metrics lines, evaluations (of evaluators without a cadence of their own) and checkpoints."""
  log: int
  eval: int
  checkpoint: int


@dataclasses.dataclass
class Services:
  """What watches the loop from outside the step: preemption, the hang watchdog, the profiler, the clock."""
  preemption: preemption_lib.PreemptionWatch
  watchdog: watchdog_lib.Watchdog
  profiler: profiling.StepProfiler
  goodput: goodput_lib.Goodput


@dataclasses.dataclass
class Outcome:
  """How the loop ended: the state, the last step reached, and the step a preemption stopped at (if any)."""
  state: Any
  step: int
  preempted_at: Optional[int] = None
  saved_at: Optional[int] = None


class TrainingLoop:
  """Runs the compiled step from a start step to the end, or to an agreed preemption step."""

  def __init__(self, run: setup_lib.RunSetup, stream: pipeline.DevicePrefetcher, sampler: order.StepSampler,
               evaluators: Dict[str, evaluators_lib.Evaluator], eval_data: evaluators_lib.EvalData,
               checkpointer: checkpoints_lib.Checkpointer, store: storage.Store, meta: Dict[str, Any],
               schedule: Schedule,
               nonfinite_policy: str, summaries: summaries_lib.Summaries, services: Services, flops: Optional[float],
               stall: Optional[tuple] = None, step_inputs: tuple = ()):
    self.run, self.stream, self.sampler = run, stream, sampler
    self.evaluators, self.eval_data = evaluators, eval_data
    self.checkpointer, self.store, self.meta, self.schedule = checkpointer, store, meta, schedule
    self.nonfinite_policy, self.summaries, self.services, self.flops = nonfinite_policy, summaries, services, flops
    self.stall = stall  # train.faults.stall: (step, seconds, where)
    self.step_inputs = step_inputs  # what the step takes after the batch: a distillation teacher's parameters
    self.device_kind = jax.devices()[0].device_kind
    self.global_batch = sampler.global_batch
    # With frozen parameters every metrics row says how many are trained (exact, so counted here, not on device).
    self.trainable = {"trainable_parameters": run.trainable()[0]} if run.frozen else {}
    # Gloo (multi-process CPU) pairs collectives by order, and asynchronous dispatch lets a process reach the
    # next program's collectives (or orbax's barriers) while its peer is still in the previous one. GPU and TPU
    # collectives are stream-ordered and need no such waits. (Simulated devices in one process need none
    # either once XLA:CPU's thread pools have headroom: runtime.set_cpu_xla_flags.)
    self.serialize_steps = jax.process_count() > 1 and jax.default_backend() == "cpu"
    self.last_train: Dict[str, float] = {}
    self.last_eval: Dict[str, float] = {}

  def _log_window(self, pending: List, done: int, seconds: float, steps: int, data_seconds: float) -> None:
    totals = None
    for metrics in pending:
      totals = summaries_lib.accumulate(totals, metrics)
    values = {k: float(s / max(w, 1e-12)) for k, (s, w) in totals.items()}
    nonfinite = int(round(float(totals["nonfinite"][0])))
    values.pop("nonfinite")
    per_step = seconds / max(steps, 1)
    values.update(step_time=per_step, data_wait_ms=1e3 * data_seconds / max(steps, 1),
                  data_wait_fraction=data_seconds / max(seconds, 1e-9),
                  examples_per_sec=self.global_batch / per_step,
                  tflops_per_device=(self.flops or 0) / per_step / 1e12,
                  mfu=mfu.mfu(self.flops, per_step, self.device_kind),
                  batch_fingerprint=order.fingerprint(self.sampler.indices(done - 1)), **self.trainable)
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

  def _due(self, done: int, steps: int) -> List[str]:
    """The evaluators to run after step `done`: those whose cadence divides it, and all of them at the end."""
    return [name for name, evaluator in self.evaluators.items()
            if done == steps or done % (evaluator.every or self.schedule.eval) == 0]

  def _evaluate(self, state, done: int, names: List[str]) -> None:
    with self.services.goodput.measure("eval"):
      self._stall_if_injected(done, "eval")
      for name in names:
        evaluator = self.evaluators[name]
        evaluated = evaluator.run(state.params, self.eval_data, on_batch=self.services.watchdog.progress)
        self.summaries.write(name, done, evaluators_lib.prefixed(name, evaluated))
        headline = evaluators_lib.prefixed(name, evaluator.headline(self.eval_data, evaluated))
        self.last_eval.update(headline)
        log(summaries_lib.format_line(done, headline))

  def _save(self, state, done: int, wait: bool) -> None:
    with self.services.goodput.measure("checkpoint"):
      self.checkpointer.save(done, state, self.meta, wait=wait)
    self.services.watchdog.progress()

  def _stall_if_injected(self, step: int, where: str) -> None:
    """Fault injection for the watchdog's and preemption's tests: the host stops before step `step` ('step') or
    before the evaluation after it ('eval'), as a hung collective would."""
    if self.stall is not None and (step, where) == (self.stall[0], self.stall[2]):
      time.sleep(self.stall[1])

  def _preempt(self, state, step: int) -> Outcome:
    with self.services.goodput.measure("checkpoint"):
      self.checkpointer.wait()  # a save of this very step may still be in flight
    saved_at = self.checkpointer.latest_step()
    if step > 0 and saved_at != step:
      self._save(state, step, wait=True)
      saved_at = step
    return Outcome(state, step, preempted_at=step, saved_at=saved_at)

  def train(self, state, compiled, start_step: int, steps: int) -> Outcome:
    """Trains from `start_step` to `steps`; stops early, saved, at an agreed preemption step."""
    services, every = self.services, self.schedule
    services.goodput.loop_started()
    pending, window_start, window_step, window_data = [], time.time(), start_step, 0.0
    bar = tqdm.tqdm(total=steps, initial=start_step, dynamic_ncols=True, desc="train",
                    disable=not (jax.process_index() == 0 and sys.stderr.isatty()))
    try:
      for step in range(start_step, steps):
        if services.preemption.should_stop(step):
          if pending:
            self._log_window(pending, step, time.time() - window_start, step - window_step, window_data)
          return self._preempt(state, step)
        self.store.step = step
        with services.goodput.measure("data"):
          data_start = time.perf_counter()
          batch = self.stream.get(step)
          window_data += time.perf_counter() - data_start
        services.profiler.before_step(step)
        with services.profiler.annotate(step):
          self._stall_if_injected(step, "step")
          state, metrics = compiled(state, batch, *self.step_inputs)
        if self.serialize_steps:
          jax.block_until_ready((state, metrics))
        with services.goodput.measure("profile"):
          services.profiler.after_step(step, (state, metrics))
        services.watchdog.progress(step_done=True)
        pending.append(metrics)
        bar.update(1)
        done = step + 1
        if done % every.log == 0 or done == steps:
          self._log_window(pending, done, time.time() - window_start, done - window_step, window_data)
          bar.set_postfix(loss=f"{self.last_train['loss']:.4f}")
          pending, window_start, window_step, window_data = [], time.time(), done, 0.0
        between_steps = time.time()  # evaluations and saves do not count in the next window's step time
        due = self._due(done, steps)
        if due:
          self._evaluate(state, done, due)
        if done % every.checkpoint == 0 or done == steps:
          # orbax's barriers are collectives too; and the last save is committed here, while its state is alive,
          # so that an outage during it is retried rather than lost.
          self._save(state, done, wait=self.serialize_steps or done == steps)
        window_start += time.time() - between_steps
    finally:
      bar.close()
    return Outcome(state, steps)
