"""Named evaluators: what `train.evaluators` runs during training, each on its own cadence, and what
`shardline eval` runs on a checkpoint (all of them, or those named with --evaluator).

An evaluator turns parameters into metrics; the trainer and `shardline eval` prefix every metric with the
evaluator's name (`eval_accuracy`, `fewshot_5shot`), log it, and write it to TensorBoard and
MODEL_DIR/metrics/<name>.jsonl. Without `train.evaluators` a run has one evaluator, `eval`: the metrics of
`train.eval_split` every `train.eval_every` steps. Evaluators bound in gin:

  EVALUATORS = {'eval': @split_eval(), 'fewshot': @fewshot()}   # gin/runs/train.gin binds train and evaluate
  split_eval.split = 'test'
  fewshot.every = 500
"""
import dataclasses
import re
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Protocol, runtime_checkable

import gin
import numpy as np

from shardline.core.errors import UserError
from shardline.data.feeder import SplitFeeder
from shardline.data.settings import StreamSettings
from shardline.tasks import splits
from shardline.training.state import run_setup as setup_lib
from shardline.training.state import step as step_lib
from shardline.training.lifecycle import summaries as summaries_lib

OnBatch = Optional[Callable[[], None]]
LABEL_SAMPLE = 256  # labels read, evenly spaced, to tell a labelled split from an unlabelled one


class EvalData:
  """A task's splits for evaluation, each streamed once per evaluation in padded batches with evaluation
  shardings (data/pipeline.py).

  Attributes:
    task: the seqio task's name.
    run: the run's model, mesh and shardings.
    batch_size: the global evaluation batch size.
    settings: the stream settings (stream.* in gin).
  """

  def __init__(self, task: str, run: setup_lib.RunSetup, batch_size: int,
               settings: Optional[StreamSettings] = None):
    self.task, self.run, self.batch_size = task, run, batch_size
    self.settings = settings or StreamSettings()
    self._feeders: Dict[str, SplitFeeder] = {}
    self._labels: Dict[str, np.ndarray] = {}
    self._eval_step = None

  def feeder(self, split: str) -> SplitFeeder:
    """The split's feeder (its source opened, and prepared if needed, on first use)."""
    if split not in self._feeders:
      self._feeders[split] = splits.open_split(self.task, split, self.settings)
    return self._feeders[split]

  def batches(self, split: str) -> Iterator[Dict[str, Any]]:
    """Every example of the split once, in padded global batches with a 'weight' feature."""
    return self.feeder(split).eval_batches(self.batch_size, self.run.eval_batch_sharding)

  def labels(self, split: str) -> np.ndarray:
    """Every label of the split, in order (read once)."""
    if split not in self._labels:
      self._labels[split] = self.feeder(split).labels()
    return self._labels[split]

  def eval_step(self) -> step_lib.PartitionedFunction:
    """The model's jitted evaluation metrics of one batch."""
    if self._eval_step is None:
      self._eval_step = step_lib.jit_eval_step(self.run.model, self.run.partitioner,
                                               self.run.state_sharding.params, self.run.eval_batch_sharding)
    return self._eval_step


@runtime_checkable
class Evaluator(Protocol):
  """What `train.evaluators` holds: a cadence and a way to turn parameters into metrics."""
  every: Optional[int]  # steps between evaluations during training; None: train.eval_every

  def check(self, data: EvalData) -> None:
    """Stops with a UserError when the evaluator cannot run on this task (before anything is written)."""

  def run(self, params: Any, data: EvalData, on_batch: OnBatch = None) -> Dict[str, float]:
    """Metrics of the parameters; `on_batch` is called after each batch (the hang watchdog's progress)."""

  def headline(self, data: EvalData, metrics: Dict[str, float]) -> Dict[str, float]:
    """The metrics worth a place in the one-line log."""


def run_eval(eval_step: step_lib.PartitionedFunction, params: Any, batches: Iterable[Dict[str, Any]],
             on_batch: OnBatch = None) -> Dict[str, float]:
  """Exact metrics over evaluation batches (padding carries weight 0)."""
  totals = None
  for batch in batches:
    totals = summaries_lib.accumulate(totals, eval_step(params, batch))
    if on_batch is not None:
      on_batch()
  return {k: float(s / max(w, 1e-12)) for k, (s, w) in totals.items()}


@gin.configurable("split_eval", module="evaluators")
@dataclasses.dataclass(frozen=True)
class SplitEval:
  """The model's evaluation metrics (accuracy, losses, ...) over every example of a split.

  Attributes:
    split: the split evaluated.
    every: steps between evaluations during training; None: train.eval_every.
  """
  split: str = "test"
  every: Optional[int] = None

  def check(self, data: EvalData) -> None:
    feeder = data.feeder(self.split)
    if "label" not in feeder.feature_names():
      return
    sample = np.unique(np.linspace(0, feeder.num_examples - 1, min(feeder.num_examples, LABEL_SAMPLE)).astype(int))
    labels = feeder.labels("label", sample)
    if (labels < 0).any():
      raise UserError(
          f"The split {self.split!r} of task {data.task!r} is unlabelled: {int((labels < 0).sum()):,} of "
          f"{len(labels):,} examples read have label {int(labels.min())} (TFDS imagenet2012's 'test' split has no "
          "labels), so its accuracy would mean nothing. Evaluate a labelled split: set EVAL_SPLIT (e.g. "
          "--gin.EVAL_SPLIT=\"'validation'\") or split_eval.split.")

  def run(self, params: Any, data: EvalData, on_batch: OnBatch = None) -> Dict[str, float]:
    return run_eval(data.eval_step(), params, data.batches(self.split), on_batch)

  def headline(self, data: EvalData, metrics: Dict[str, float]) -> Dict[str, float]:
    return data.run.model.headline(metrics)


_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check(evaluators: Mapping[str, Evaluator], where: str) -> None:
  """Stops when a name is not a lower-case identifier (it prefixes metric and file names) or a cadence is not a
  positive number of steps."""
  if not isinstance(evaluators, Mapping) or not evaluators:
    raise UserError(f"{where} = {evaluators!r}; it must be a non-empty dict of name -> evaluator, e.g. "
                    "{'eval': @split_eval(), 'fewshot': @fewshot()}.")
  for name, evaluator in evaluators.items():
    if not isinstance(name, str) or not _NAME.fullmatch(name):
      raise UserError(f"{where}: the name {name!r} must be a lower-case identifier (letters, digits, '_'); it "
                      "prefixes the evaluator's metrics and names its TensorBoard folder.")
    if not isinstance(evaluator, Evaluator):
      raise UserError(f"{where}[{name!r}] = {evaluator!r} is not an evaluator; use @split_eval() or @fewshot().")
    if evaluator.every is not None and (not isinstance(evaluator.every, int) or evaluator.every <= 0):
      raise UserError(f"{where}[{name!r}].every = {evaluator.every!r}; it must be a positive number of steps, or "
                      "None for train.eval_every.")


def select(evaluators: Mapping[str, Evaluator], names) -> Dict[str, Evaluator]:
  """The evaluators named (all of them when `names` is empty); an unknown name stops with the known ones."""
  if not names:
    return dict(evaluators)
  unknown = [n for n in names if n not in evaluators]
  if unknown:
    raise UserError(f"--evaluator {', '.join(unknown)}: no such evaluator; this configuration has "
                    f"{', '.join(evaluators)} (EVALUATORS, or evaluate.evaluators, in gin).")
  return {n: evaluators[n] for n in names}


def prefixed(name: str, metrics: Mapping[str, float]) -> Dict[str, float]:
  """{'accuracy': x} -> {'<name>_accuracy': x}."""
  return {f"{name}_{k}": v for k, v in metrics.items()}
