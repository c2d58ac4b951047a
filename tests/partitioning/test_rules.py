"""Rule resolution, parameter shardings and the divisibility check."""
import flax.linen as nn
import jax
import pytest
from jax.sharding import PartitionSpec as P

from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import rules
from shardline.partitioning import shardings
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from tests import helpers

SIZES = {"data": 1, "fsdp": 4, "tensor": 2, "expert": 1}


def test_rule_priority_resolves_conflicts():
  # The residual stream: batch takes fsdp, so embed stays whole; length is split over tensor.
  assert rules.resolve_spec(("batch", "length", "embed"), rules.FSDP_TENSOR, SIZES) == P("fsdp", "tensor", None)
  # Inside attention heads outrank length for the tensor axis.
  assert rules.resolve_spec(("batch", "length", "heads", "kv"), rules.FSDP_TENSOR, SIZES) == P(
      "fsdp", None, "tensor", None)
  # Weights: embed over fsdp, heads over tensor.
  assert rules.resolve_spec(("embed", "heads", "kv"), rules.FSDP_TENSOR, SIZES) == P("fsdp", "tensor", None)
  # Axes of size 1 are dropped.
  assert rules.resolve_spec(("batch", "embed"), rules.FSDP, {"data": 1, "fsdp": 8}) == P("fsdp", None)


def test_unknown_logical_axis_is_refused():
  with pytest.raises(ValueError, match="not in partitioning/axes.py"):
    rules.resolve_spec(("batch", "embedding"), rules.FSDP)


def test_unknown_rule_set_name():
  with pytest.raises(UserError, match="Choose one of"):
    rules.rule_set("fsdp-tensor")


def test_param_shardings_follow_rules():
  model = ImageClassifier(helpers.tiny_vit())
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(2))
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR)
  specs = shardings.param_shardings(boxed, partitioner)
  layers = specs["encoder"]["layers"]
  assert layers["query"].spec == P(None, "fsdp", "tensor", None)  # [layers, embed, heads, kv]
  assert layers["mlp_in"].spec == P(None, "fsdp", "tensor")
  assert layers["mlp_out"].spec == P(None, "tensor", "fsdp")


def test_indivisible_rule_names_parameter_axis_and_rule():
  model = ImageClassifier(helpers.tiny_vit(num_heads=6, head_dim=8, head="gap"))  # 6 heads, tensor=4
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(2))
  partitioner = Partitioner(helpers.mesh(fsdp=2, tensor=4), rules.FSDP_TENSOR)
  with pytest.raises(UserError) as e:
    shardings.param_shardings(boxed, partitioner)
  message = str(e.value)
  assert "encoder/layers/" in message and "'heads'" in message and "'tensor'" in message
  assert "not divisible by 4" in message and "fsdp_tensor" in message


def test_optimizer_state_follows_params():
  import optax  # pylint: disable=g-import-not-at-top
  model = ImageClassifier(helpers.tiny_vit())
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(2))
  partitioner = Partitioner(helpers.mesh(fsdp=8), rules.FSDP)
  param_specs = shardings.param_shardings(boxed, partitioner)
  params = nn.unbox(boxed)
  for tx in (optax.adamw(1e-3), optax.adafactor(1e-3)):
    state = jax.eval_shape(tx.init, params)
    specs = shardings.follow_params(state, params, param_specs, partitioner)
    flat = jax.tree_util.tree_flatten_with_path(specs)[0]
    leaves = {shardings.path_str(p): s.spec for p, s in flat}
    shapes = {shardings.path_str(p): l.shape for p, l in jax.tree_util.tree_flatten_with_path(state)[0]}
    shadows = [k for k in leaves if k.endswith("encoder/layers/mlp_in")]
    full = [k for k in shadows if shapes[k] == params["encoder"]["layers"]["mlp_in"].shape]
    assert full, f"no optimizer leaf shadows mlp_in in {tx}"
    for k in shadows:  # Full-shape shadows are sharded like the parameter; factored statistics replicate.
      assert leaves[k] == (P(None, "fsdp", None) if k in full else P()), k
    assert all(s.mesh == partitioner.mesh for _, s in flat)
