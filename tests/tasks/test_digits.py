"""The digits task: a deterministic split through seqio, and step-indexed sampling."""
import numpy as np

from shardline.data import order
from shardline.tasks import digits
from tests import helpers


def test_split_is_deterministic_stratified_and_disjoint():
  train, test = digits.load_split("train"), digits.load_split("test")
  assert len(train["label"]) + len(test["label"]) == 1797
  assert len(test["label"]) == 359
  assert train["image"].shape[1:] == (8, 8, 1) and train["image"].max() <= 1.0
  assert set(np.bincount(test["label"])) <= set(range(34, 38))  # about 20% of each class
  train_rows = {r.tobytes() for r in train["image"]}
  assert not any(r.tobytes() in train_rows for r in test["image"][:50])
  digits.load_split.cache_clear()
  np.testing.assert_array_equal(digits.load_split("test")["label"], test["label"])


def test_seqio_task_serves_the_split(tmp_path):
  examples = helpers.read_split("digits", "test", tmp_path)
  np.testing.assert_array_equal(examples["label"], digits.load_split("test")["label"])
  assert examples["image"].dtype == np.float32


def test_sampler_is_a_pure_function_of_the_step():
  sampler = order.StepSampler(num_examples=100, global_batch=32, seed=3)
  again = order.StepSampler(num_examples=100, global_batch=32, seed=3)
  for step in (0, 3, 7):
    np.testing.assert_array_equal(sampler.indices(step), again.indices(step))
  # One epoch visits every example exactly once.
  first_epoch = np.concatenate([sampler.indices(s) for s in range(3)] + [sampler.indices(3)[:4]])
  assert sorted(first_epoch) == list(range(100))
  assert not np.array_equal(sampler.indices(0), order.StepSampler(100, 32, seed=4).indices(0))
