"""Mixup: the mix it computes, its independence from how the batch is sharded (so from the process count), and the
classifier's loss on mixed soft targets."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from shardline.models.common.mixup import mixup
from shardline.models.vit22b.classifier import ImageClassifier
from tests import helpers


def _batch(n=8, classes=4):
  images = jax.random.uniform(jax.random.PRNGKey(0), (n, 4, 4, 3))
  targets = jax.nn.one_hot(jnp.arange(n) % classes, classes)
  return images, targets


def test_each_row_is_mixed_with_the_row_before_it_with_one_dominant_weight():
  images, targets = _batch()
  mixed_images, mixed_targets = mixup(jax.random.PRNGKey(3), images, targets, 0.4)
  lam = float(mixed_targets[1, 1])  # row 1 is 1-hot on class 1, row 0 on class 0
  assert 0.5 <= lam < 1.0
  np.testing.assert_allclose(mixed_targets[1, 0], 1 - lam, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, lam * images + (1 - lam) * jnp.roll(images, 1, axis=0), rtol=1e-6)
  np.testing.assert_allclose(mixed_targets.sum(-1), 1.0, rtol=1e-6)
  # another step's key gives another weight; the same key the same one
  other = float(mixup(jax.random.PRNGKey(4), images, targets, 0.4)[1][1, 1])
  assert other != lam and float(mixup(jax.random.PRNGKey(3), images, targets, 0.4)[1][1, 1]) == lam


def test_the_mix_does_not_depend_on_how_the_batch_is_sharded():
  """Each process holds its devices' rows; the neighbour of a device's first row lives on another device, so
  the mix is the same with the batch on one device or split over eight (as over any number of processes)."""
  images, targets = _batch(16)
  mesh = helpers.mesh(data=8)
  rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  one_device = NamedSharding(helpers.mesh(), PartitionSpec())
  compiled = lambda sharding: jax.jit(mixup, static_argnums=3, out_shardings=(sharding, sharding))
  sharded = compiled(rows)(jax.random.PRNGKey(5), jax.device_put(images, rows), jax.device_put(targets, rows), 0.2)
  whole = compiled(one_device)(jax.random.PRNGKey(5), jax.device_put(images, one_device),
                               jax.device_put(targets, one_device), 0.2)
  for a, b in zip(sharded, whole):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.full
def test_the_classifier_trains_on_mixed_targets_and_counts_its_own_labels():
  config = helpers.tiny_vit()
  plain, mixing = ImageClassifier(config), ImageClassifier(config, mixup_alpha=0.5)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (8, 8, 8, 1)), "label": jnp.arange(8) % 10}
  params = nn.unbox(plain.init(jax.random.PRNGKey(2), batch))
  leaves, treedef = jax.tree.flatten(params)  # the head starts at zero: perturb it so logits depend on the image
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  params = jax.tree.unflatten(treedef, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  rng = jax.random.PRNGKey(7)
  loss, metrics = mixing.loss_and_metrics(params, batch, rng)
  images, targets = mixup(rng, batch["image"], jax.nn.one_hot(batch["label"], 10), 0.5)
  logits = plain.logits(params, images)
  np.testing.assert_allclose(loss, -(targets * jax.nn.log_softmax(logits)).sum(-1).mean(), rtol=1e-5)
  accuracy = metrics["accuracy"][0] / metrics["accuracy"][1]
  np.testing.assert_allclose(accuracy, (logits.argmax(-1) == batch["label"]).mean(), rtol=1e-6)
  assert abs(float(loss) - float(plain.loss_and_metrics(params, batch, rng)[0])) > 1e-5  # float32 noise is ~1e-7
  # evaluation never mixes
  np.testing.assert_array_equal(mixing.eval_metrics(params, batch)["loss"][0],
                                plain.eval_metrics(params, batch)["loss"][0])
