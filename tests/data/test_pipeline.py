"""The loader: a pure function of the step, the same with 0 or N grain workers and after a restart, with random
augmentation on; each process's rows; evaluation batches that cover the split exactly once; and a worker that
raises is reported with its example, without hanging."""
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shardline.core.errors import UserError
from shardline.data import augment, order, pipeline, prepare, prepared
from shardline.data.feeder import SplitFeeder
from shardline.data.settings import StreamSettings
from shardline.data.source import Transform
from shardline.tasks import digits, registry

BATCH = 32
STEPS = 5


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory):
  return prepared.PreparedSource(prepare.prepare(registry.get_task(digits.TASK_NAME), "train", str(tmp_path_factory.mktemp("cache")),
                                                 quiet=True))


def _shardings():
  mesh = Mesh(np.array(jax.devices()), ("data",))
  return {"image": NamedSharding(mesh, P("data")), "label": NamedSharding(mesh, P("data"))}


def _settings(workers):
  return StreamSettings(workers=workers, train_transform=augment.TrainImages(
      size=8, channels=1, area_range=(0.3, 1.0)))


def _batches(source, workers, start, sampler):
  feeder = SplitFeeder(source, _settings(workers))
  with feeder.train_stream(sampler, start, STEPS, _shardings()) as stream:
    return {step: {k: np.asarray(v) for k, v in stream.get(step).items()} for step in range(start, STEPS)}


@pytest.mark.full
def test_workers_and_restarts_give_bit_identical_augmented_batches(digits_train):
  sampler = order.StepSampler(len(digits_train), BATCH, seed=7)
  in_process = _batches(digits_train, 0, 0, sampler)
  with_workers = _batches(digits_train, 2, 0, sampler)
  restarted = _batches(digits_train, 2, 3, sampler)  # as a run resumed at step 3 would read
  for step in range(STEPS):
    for name in ("image", "label"):
      np.testing.assert_array_equal(with_workers[step][name], in_process[step][name])
      if step >= 3:
        np.testing.assert_array_equal(restarted[step][name], in_process[step][name])
  # the augmentation is on: the same example differs between epochs, and the labels follow the sampler
  image = in_process[0]["image"]  # uint8 from the workers, mapped to float32 in value_range on the devices
  assert image.shape == (BATCH, 8, 8, 1) and image.dtype == np.float32
  assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.5
  np.testing.assert_array_equal(in_process[2]["label"], digits_train.column("label", sampler.indices(2)))
  plain = np.stack([digits_train[int(i)]["image"] for i in sampler.indices(2)])
  assert not np.allclose(in_process[2]["image"], plain, atol=0.02)


def test_processes_read_disjoint_rows_whose_union_is_the_global_batch(digits_train):
  sampler = order.StepSampler(len(digits_train), BATCH, seed=0)
  loader = pipeline.RowLoader(digits_train, ("image", "label"), None, seed=0)
  whole = pipeline.TrainBatches(loader, sampler, np.arange(BATCH))(4)
  halves = [pipeline.TrainBatches(loader, sampler, rows)(4) for rows in np.split(np.arange(BATCH), 2)]
  for name in ("image", "label"):
    np.testing.assert_array_equal(np.concatenate([h[name] for h in halves]), whole[name])
  assert order.fingerprint(sampler.indices(4)) == order.fingerprint(order.StepSampler(len(digits_train), BATCH,
                                                                                     seed=0).indices(4))
  assert order.fingerprint(sampler.indices(4)) != order.fingerprint(sampler.indices(5))


def test_evaluation_streams_every_example_once_padded(digits_train):
  feeder = SplitFeeder(digits_train, StreamSettings())
  shardings = {**_shardings(), "weight": _shardings()["label"]}
  batches = [{k: np.asarray(v) for k, v in b.items()} for b in feeder.eval_batches(BATCH * 2, shardings)]
  n = len(digits_train)
  assert len(batches) == -(-n // (BATCH * 2))
  weights = np.concatenate([b["weight"] for b in batches])
  assert weights.sum() == n and (weights[:n] == 1).all() and (weights[n:] == 0).all()
  labels = np.concatenate([b["label"] for b in batches])[:n]
  np.testing.assert_array_equal(labels, digits_train.column("label", range(n)))


@pytest.mark.full
@pytest.mark.parametrize("workers", [0, 2])
def test_a_transform_that_raises_names_its_example_and_does_not_hang(digits_train, workers):
  sampler = order.StepSampler(len(digits_train), BATCH, seed=0)
  bad = int(sampler.indices(1)[5])
  feeder = SplitFeeder(digits_train, StreamSettings(
      workers=workers, train_transform=RaiseOn(digits_train[bad]["image"])))
  with feeder.train_stream(sampler, 0, STEPS, _shardings()) as stream:
    stream.get(0)
    with pytest.raises(UserError, match=rf"Loading example {bad} \(epoch 0\) failed: ValueError: a broken "
                                        "augmentation"):
      stream.get(1)


class RaiseOn(Transform):
  """A transform that raises on the example with this image (picklable, for grain's workers)."""

  def __init__(self, image):
    self.image = image

  def __call__(self, example, rng):
    del rng
    if np.array_equal(example["image"], self.image):
      raise ValueError("a broken augmentation")
    return example
