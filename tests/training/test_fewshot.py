"""Few-shot evaluation: the closed-form ridge classifier, the shots check, and `shardline eval` with @fewshot()."""
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.training import fewshot
from tests import helpers


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
  assert first == again and set(first) == {"1shot", "1shot_std", "25shot", "25shot_std"}
  assert first["25shot"] > first["1shot"] > 0.25


def test_more_shots_than_examples_of_a_class_stops():
  labels = np.array([0] * 30 + [1] * 4 + [2] * 7)
  with pytest.raises(UserError, match=r"asks for 10 shots per class.*2 classes \(class 1: 4, class 2: 7\)"):
    fewshot.check_shots(labels, (1, 10), "train")


def test_shardline_eval_reports_few_shot_accuracies(tmp_path):
  model_dir = tmp_path / "run"
  trained = helpers.run_shardline(*helpers.tiny_train_args(model_dir, 3))
  assert trained.returncode == 0, trained.stderr[-2000:]
  result = helpers.run_shardline("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                 f"--gin.MODEL_DIR='{model_dir}'", "--gin.evaluate.fewshot=@fewshot()",
                                 "--gin.fewshot.shots=(1, 5)", "--gin.fewshot.seeds=2")
  assert result.returncode == 0, result.stderr[-2000:]
  line = next(l for l in result.stdout.splitlines() if l.startswith("Few-shot"))
  assert "train -> test" in line and "2 seeds" in line and "1-shot" in line and "5-shot" in line
  too_many = helpers.run_shardline("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                   f"--gin.MODEL_DIR='{model_dir}'", "--gin.evaluate.fewshot=@fewshot()",
                                   "--gin.fewshot.shots=(500,)")
  assert too_many.returncode == 2 and "asks for 500 shots per class" in too_many.stderr
  assert "Traceback" not in too_many.stderr
