"""Gradient accumulation: k strided microbatches give the update of the whole batch, and splitting the batch
moves no data between devices."""
import jax
import numpy as np
import optax

from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner, use_partitioner
from shardline.tasks import digits
from shardline.training.state import microbatches
from shardline.training.state import step as step_lib
from shardline.training.state import train_state
from tests import helpers

BATCH = 32


def _one_step(k: int):
  model = ImageClassifier(helpers.tiny_vit())
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR)
  tx = optax.sgd(0.5)
  spec = model.batch_spec(BATCH)
  _, sharding, _ = train_state.abstract_state(model, tx, spec, partitioner)
  batch_sharding = {name: partitioner.sharding(model.batch_axes()[name]) for name in spec}
  state = train_state.init_state(model, tx, spec, partitioner, sharding)
  before = jax.device_get(state.params)
  step = step_lib.jit_train_step(step_lib.train_step_fn(model, tx, lambda s: 0.5, microbatches=k), partitioner,
                                 sharding, batch_sharding)
  data = digits.load_split("train")
  batch = jax.device_put({"image": data["image"][:BATCH], "label": data["label"][:BATCH]}, batch_sharding)
  state, metrics = step(state, batch)
  return before, jax.device_get(state.params), jax.device_get(metrics)


def test_four_microbatches_give_the_update_of_one_batch():
  before, whole, whole_metrics = _one_step(1)
  _, accumulated, accumulated_metrics = _one_step(4)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(before)))
  assert moved > 1e-3  # the step really updates the parameters
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **helpers.tolerance("float32", scale=5)),
               accumulated, whole)
  for name in ("loss", "accuracy", "grad_norm"):
    a, b = accumulated_metrics[name], whole_metrics[name]
    np.testing.assert_allclose(a[0] / a[1], b[0] / b[1], rtol=1e-5)
  assert accumulated_metrics["accuracy"][1] == BATCH  # the accuracy's weight is every example, once


def test_microbatch_j_is_rows_j_plus_multiples_of_k_and_the_split_moves_no_data():
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR)
  sharding = partitioner.sharding(("batch", None))
  batch = {"x": jax.device_put(np.arange(BATCH * 3, dtype=np.float32).reshape(BATCH, 3), sharding)}

  def split(b):
    with use_partitioner(partitioner):
      return microbatches.split_strided(b, 4, {"x": ("batch", None)})

  compiled = jax.jit(split).lower(batch).compile()
  hlo = compiled.as_text()
  for collective in ("all-to-all", "all-gather", "collective-permute", "all-reduce"):
    assert collective not in hlo, collective
  out = np.asarray(compiled(batch)["x"])
  np.testing.assert_array_equal(out[1], np.asarray(batch["x"])[1::4])
