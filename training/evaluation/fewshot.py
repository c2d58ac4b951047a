"""Few-shot evaluation on frozen pre-logit features: closed-form ridge regression, as big_vision's fewshot_lsr.

For each number of shots n and each seed, n examples of every class are drawn from the training split, a
ridge regression from their (centred) features to +1/-1 class targets is solved in closed form, and the test
split is classified by the largest output. The accuracy is averaged over seeds. As an evaluator
(training/evaluation/evaluators.py) it runs during training (`EVALUATORS = {..., 'fewshot': @fewshot()}`) or from
`shardline eval --evaluator=fewshot`.
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import gin
import numpy as np

from shardline.core.errors import UserError
from shardline.models.base import BaseModel
from shardline.training.evaluation import evaluators as evaluators_lib
from shardline.training.state import run_setup as setup_lib
from shardline.training.state import step as step_lib


@gin.configurable("fewshot", module="evaluators")
@dataclasses.dataclass(frozen=True)
class FewShot:
  """A few-shot evaluation.

  Attributes:
    train_split: where the shots are drawn from.
    test_split: what is classified.
    shots: examples per class.
    seeds: draws per number of shots (the accuracy is their mean).
    l2_reg: the ridge penalty.
    every: steps between evaluations during training; None: train.eval_every.
  """
  train_split: str = "train"
  test_split: str = "test"
  shots: Sequence[int] = (1, 5, 10, 25)
  seeds: int = 3
  l2_reg: float = 2.0 ** 10
  every: Optional[int] = None

  def check(self, data: evaluators_lib.EvalData) -> None:
    check_shots(data.labels(self.train_split), self.shots, self.train_split)
    data.feeder(self.test_split)

  def run(self, params: Any, data: evaluators_lib.EvalData,
          on_batch: evaluators_lib.OnBatch = None) -> Dict[str, float]:
    model, run = data.run.model, data.run
    train = features(model, run, params, data, self.train_split, on_batch)
    test = features(model, run, params, data, self.test_split, on_batch)
    return accuracies(train, test, self, self.train_split)

  def headline(self, data: evaluators_lib.EvalData, metrics: Dict[str, float]) -> Dict[str, float]:
    del data
    return {k: v for k, v in metrics.items() if not k.endswith("_std")}


def ridge_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   num_classes: int, l2_reg: float) -> float:
  """Accuracy on the test features of a ridge regression fitted to the training features."""
  mean = train_x.mean(0, keepdims=True)
  x = (train_x - mean).astype(np.float64)  # [n, f]
  targets = 2.0 * np.eye(num_classes)[train_y] - 1.0  # [n, c], +1 for the class and -1 for the others
  bias = targets.mean(0, keepdims=True)
  # Solved in the n x n dual form: n (the shots) is far smaller than f (the width).
  weights = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(len(x)), targets - bias)  # [f, c]
  predictions = ((test_x - mean) @ weights + bias).argmax(-1)
  return float((predictions == test_y).mean())


def _draw(labels: np.ndarray, shots: int, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in classes])


def check_shots(labels: np.ndarray, shots: Sequence[int], split: str) -> None:
  """Stops when a class has fewer training examples than the largest number of shots."""
  classes, counts = np.unique(labels, return_counts=True)
  if not len(classes):
    raise UserError(f"Few-shot evaluation: the split {split!r} has no examples.")
  short = [(int(c), int(n)) for c, n in zip(classes, counts) if n < max(shots)]
  if short:
    shown = ", ".join(f"class {c}: {n}" for c, n in short[:8]) + (" ..." if len(short) > 8 else "")
    raise UserError(f"Few-shot evaluation asks for {max(shots)} shots per class, but the split {split!r} has fewer "
                    f"examples of {len(short)} classes ({shown}). Lower evaluators.fewshot.shots, or use a "
                    "larger split (evaluators.fewshot.train_split).")


def accuracies(train: Tuple[np.ndarray, np.ndarray], test: Tuple[np.ndarray, np.ndarray], spec: FewShot,
               train_split: str = "train") -> Dict[str, float]:
  """'<n>shot_accuracy' -> mean accuracy over the seeds, and '<n>shot_accuracy_std' -> its standard deviation."""
  (train_x, train_y), (test_x, test_y) = train, test
  check_shots(train_y, spec.shots, train_split)
  classes = np.unique(train_y)
  num_classes = int(max(classes.max(), test_y.max())) + 1
  out = {}
  for shots in spec.shots:
    scores = []
    for seed in range(spec.seeds):
      chosen = _draw(train_y, shots, classes, np.random.default_rng([seed, shots]))
      scores.append(ridge_accuracy(train_x[chosen], train_y[chosen], test_x, test_y, num_classes, spec.l2_reg))
    out[f"{shots}shot_accuracy"] = float(np.mean(scores))
    out[f"{shots}shot_accuracy_std"] = float(np.std(scores))
  return out


def features(model: BaseModel, run: setup_lib.RunSetup, params: Any, data: evaluators_lib.EvalData, split: str,
             on_batch: evaluators_lib.OnBatch = None) -> Tuple[np.ndarray, np.ndarray]:
  """Pre-logit features [n, f] and labels [n] of every example of a split, gathered to each host; `on_batch` is
  called after each batch."""
  extract = step_lib.PartitionedFunction(model.features, run.partitioner,
                                         in_shardings=(run.state_sharding.params, run.eval_batch_sharding),
                                         out_shardings=run.partitioner.replicated())
  rows = []
  for batch in data.batches(split):
    rows.append(np.asarray(extract(params, batch)))
    if on_batch is not None:
      on_batch()
  # The split in order, then the last batch's padding (repeats of the last example), which is cut off.
  labels = data.labels(split)
  return np.concatenate(rows)[:len(labels)], labels
