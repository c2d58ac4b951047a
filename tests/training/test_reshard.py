"""A checkpoint saved on an 8-way fsdp mesh restores onto 2x4 fsdp x tensor and onto one device, exactly; one of
another parameter layout stops with the differences."""
import jax
import numpy as np
import optax
import pytest

from shardline.core.errors import UserError
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.tasks import digits
from shardline.training.lifecycle import checkpoints
from shardline.training.state import step as step_lib
from shardline.training.state import train_state
from tests import helpers

BATCH = 16


def _setup(mesh, rule_set):
  model = ImageClassifier(helpers.tiny_vit())
  partitioner = Partitioner(mesh, rule_set)
  tx = optax.adamw(1e-3)
  spec = model.batch_spec(BATCH)
  abstract, sharding, _ = train_state.abstract_state(model, tx, spec, partitioner)
  batch_sharding = {k: partitioner.sharding(model.batch_axes()[k]) for k in spec}
  step = step_lib.jit_train_step(step_lib.train_step_fn(model, tx, lambda s: 1e-3), partitioner, sharding,
                                 batch_sharding)
  return model, tx, spec, partitioner, abstract, sharding, batch_sharding, step


def _batch(i):
  data = digits.load_split("train")
  return {"image": data["image"][i * BATCH:(i + 1) * BATCH], "label": data["label"][i * BATCH:(i + 1) * BATCH]}


@pytest.mark.full
def test_restore_onto_other_meshes_is_exact_and_training_continues(tmp_path):
  model, tx, spec, partitioner, _, sharding, batch_sharding, step = _setup(helpers.mesh(fsdp=8), rules.FSDP)
  state = train_state.init_state(model, tx, spec, partitioner, sharding)
  for i in range(2):
    state, _ = step(state, jax.device_put(_batch(i), batch_sharding))
  saver = checkpoints.Checkpointer(str(tmp_path), async_save=False)
  saver.save(2, state, {"fingerprint": model.fingerprint()})
  saver.close()
  saved = jax.device_get(state)
  _, expected_metrics = step(state, jax.device_put(_batch(2), batch_sharding))

  targets = {"2x4 fsdp x tensor": (helpers.mesh(fsdp=2, tensor=4), rules.FSDP_TENSOR),
             "one device": (helpers.mesh(), rules.FSDP)}
  for name, (mesh, rule_set) in targets.items():
    _, _, _, _, abstract, target_sharding, target_batch, target_step = _setup(mesh, rule_set)
    loader = checkpoints.Checkpointer(str(tmp_path), async_save=False)
    restored = loader.restore(2, abstract, target_sharding)
    loader.close()
    for got, want in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(saved)):
      np.testing.assert_array_equal(got, want, err_msg=name)
    leaf = restored.params["encoder"]["layers"]["query"]
    assert leaf.sharding == target_sharding.params["encoder"]["layers"]["query"], name
    _, metrics = target_step(restored, jax.device_put(_batch(2), target_batch))
    np.testing.assert_allclose(float(metrics["loss"][0]), float(expected_metrics["loss"][0]), rtol=1e-5,
                               err_msg=name)


def test_a_checkpoint_of_another_parameter_layout_stops_with_the_differences(tmp_path):
  abstract, sharding = _setup(helpers.mesh(fsdp=8), rules.FSDP)[4:6]
  renamed = dict(abstract.params, old_query=abstract.params["encoder"]["layers"]["query"])
  del renamed["head_bias"]
  old = abstract.replace(params=renamed)
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), old)
  saver = checkpoints.Checkpointer(str(tmp_path), async_save=False)
  saver.save(1, state, {})
  with pytest.raises(UserError) as error:
    saver.restore(1, abstract, sharding)
  saver.close()
  message = str(error.value)
  assert "the model has 1 the checkpoint lacks (head_bias)" in message
  assert "the checkpoint has 1 the model lacks (old_query)" in message and "Nothing was restored" in message
