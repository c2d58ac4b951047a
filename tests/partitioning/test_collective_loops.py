"""Multi-process CPU runs unroll every loop that holds collectives (partitioning.context.collectives_need_unrolled_
loops): the compiled train step of a scanned ViT with microbatches then has no while loop with a collective
inside, while the default keeps the loops."""
import re

import jax
import optax
import pytest

from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.training.state import step as step_lib
from shardline.training.state import train_state
from tests import helpers

COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all)(-start)?\(")


def _loop_bodies_with_collectives(unroll: bool):
  model = ImageClassifier(helpers.tiny_vit(scan_layers=True, depth=3))
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR, unroll_collective_loops=unroll)
  tx = optax.adamw(1e-3)
  spec = model.batch_spec(16)
  abstract, sharding, _ = train_state.abstract_state(model, tx, spec, partitioner)
  batch_sharding = {name: partitioner.sharding(model.batch_axes()[name]) for name in spec}
  step = step_lib.jit_train_step(step_lib.train_step_fn(model, tx, lambda s: 1e-3, microbatches=2), partitioner,
                                 sharding, batch_sharding)
  attach = lambda tree, shardings: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                                tree, shardings)
  text = step.lower(attach(abstract, sharding), attach(spec, batch_sharding)).compile().as_text()
  bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", text))
  computations = {c.split(" ", 1)[0].lstrip("%"): c for c in re.split(r"\n(?=%?\S+ .*\{\n)", text)}
  return [name for name in bodies if COLLECTIVE.search(computations.get(name, ""))]


@pytest.mark.full
def test_unrolled_for_multi_process_cpu_and_scanned_otherwise():
  assert _loop_bodies_with_collectives(unroll=False)  # the layer scan and the microbatches are loops by default
  assert _loop_bodies_with_collectives(unroll=True) == []
