"""Sharding parity: the same training steps on one device and on 1x8, 2x4 and 8x1 meshes agree."""
import functools

import jax
import numpy as np
import optax
import pytest

from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.tasks import digits
from shardline.training.state import step as step_lib
from tests import helpers

BATCH = 16
STEPS = 3


def _batches():
  data = digits.load_split("train")
  return [{"image": data["image"][i * BATCH:(i + 1) * BATCH], "label": data["label"][i * BATCH:(i + 1) * BATCH]}
          for i in range(STEPS)]


@functools.lru_cache(maxsize=None)
def _run(fsdp: int, tensor: int, dtype: str):
  """Losses of STEPS adamw steps and the gradients at initialisation, on an fsdp x tensor mesh."""
  model = ImageClassifier(helpers.tiny_vit(dtype=dtype))
  partitioner = Partitioner(helpers.mesh(fsdp=fsdp, tensor=tensor), rules.FSDP_TENSOR)
  tx = optax.adamw(1e-3)
  setup = helpers.sharded_training(model, partitioner, tx, BATCH, 1e-3)
  state, sharding, batch_sharding, train = setup.state, setup.sharding, setup.batch_sharding, setup.train
  batches = [jax.device_put(b, batch_sharding) for b in _batches()]

  grad_fn = step_lib.PartitionedFunction(
      jax.grad(lambda p, b: model.loss_and_metrics(p, b, None)[0]), partitioner,
      in_shardings=(sharding.params, batch_sharding), out_shardings=sharding.params)
  grads = jax.device_get(grad_fn(state.params, batches[0]))
  losses = []
  for batch in batches:
    state, metrics = train(state, batch)
    losses.append(float(metrics["loss"][0]))
  return np.array(losses), grads


@pytest.mark.full
@pytest.mark.parametrize("fsdp, tensor", [(1, 8), (2, 4), (8, 1)])
def test_losses_and_gradients_match_single_device(fsdp, tensor):
  ref_losses, ref_grads = _run(1, 1, "float32")
  losses, grads = _run(fsdp, tensor, "float32")
  tol = helpers.tolerance("float32")
  np.testing.assert_allclose(losses, ref_losses, **tol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **helpers.tolerance("float32", scale=5)),
               grads, ref_grads)
  assert losses[-1] < losses[0]  # the steps really train


@pytest.mark.full
def test_bfloat16_parity_on_2x4():
  ref_losses, _ = _run(1, 1, "bfloat16")
  losses, _ = _run(2, 4, "bfloat16")
  np.testing.assert_allclose(losses, ref_losses, **helpers.tolerance("bfloat16"))
