"""Few-shot evaluation: the closed-form ridge classifier and the shots check (runs: tests/training/test_evaluators.py)."""
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.training.evaluation import fewshot


def _clusters(rng, n_per_class, classes=4, width=32, spread=0.3):
  centres = rng.normal(size=(classes, width))
  labels = np.repeat(np.arange(classes), n_per_class)
  return centres[labels] + spread * rng.normal(size=(len(labels), width)), labels


def test_ridge_separates_clusters_and_not_random_labels():
  rng = np.random.default_rng(0)
  train_x, train_y = _clusters(rng, 5)
  test_x, test_y = _clusters(np.random.default_rng(0), 50)  # the same centres, new noise
  test_x = test_x + 0.3 * rng.normal(size=test_x.shape)
  assert fewshot.ridge_accuracy(train_x, train_y, test_x, test_y, 4, l2_reg=1.0) > 0.95
  shuffled = rng.permutation(test_y)
  assert fewshot.ridge_accuracy(train_x, train_y, test_x, shuffled, 4, l2_reg=1.0) < 0.5


def test_accuracies_per_shot_are_reproducible_and_improve_with_shots():
  rng = np.random.default_rng(1)
  train = _clusters(rng, 40, spread=1.5)
  test = _clusters(np.random.default_rng(1), 60, spread=1.5)
  spec = fewshot.FewShot(shots=(1, 25), seeds=5, l2_reg=1.0)
  first, again = fewshot.accuracies(train, test, spec), fewshot.accuracies(train, test, spec)
  assert first == again and set(first) == {"1shot_accuracy", "1shot_accuracy_std", "25shot_accuracy",
                                               "25shot_accuracy_std"}
  assert first["25shot_accuracy"] > first["1shot_accuracy"] > 0.25


def test_more_shots_than_examples_of_a_class_stops():
  labels = np.array([0] * 30 + [1] * 4 + [2] * 7)
  with pytest.raises(UserError, match=r"asks for 10 shots per class.*2 classes \(class 1: 4, class 2: 7\)"):
    fewshot.check_shots(labels, (1, 10), "train")
