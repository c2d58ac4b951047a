"""Early validation through gin: a bad mesh, an indivisible batch and an indivisible rule, each named."""
import gin
import pytest

from shardline.launch import gin_config
from shardline.core.errors import UserError
from shardline.training.state import batch_checks
from shardline.training.state import run_setup as setup

EXPERIMENT = "experiments/vit22b_tiny_digits_cpu8.gin"


def _build(*bindings):
  gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/unused'", *bindings])
  model = gin.query_parameter("train.model").scoped_configurable_fn()
  return setup.build(model, total_steps=10, global_batch=gin.query_parameter("BATCH_SIZE/macro.value"))


def test_experiment_builds():
  run = _build()
  assert run.partitioner.mesh.devices.shape == (1, 4, 2, 1)


def test_bad_mesh_message():
  with pytest.raises(UserError, match="needs 16 devices but 8 are available"):
    _build("partitioning.make_mesh.ici_fsdp = 8")


def test_indivisible_batch_message():
  run = _build()
  with pytest.raises(UserError) as e:
    batch_checks.check_batch_divisible(130, run.partitioner)
  assert "130 is not divisible by the data-parallel size 4" in str(e.value) and "fsdp" in str(e.value)


def test_indivisible_rule_message():
  with pytest.raises(UserError) as e:
    _build("vit22b.ViT22BConfig.mlp_dim = 255")
  message = str(e.value)
  assert "encoder/layers/mlp_in" in message and "'mlp'" in message and "not divisible by 2" in message


def test_out_of_range_learning_rate():
  with pytest.raises(UserError, match="learning_rate = -0.1 is out of range"):
    _build("optimizer.make_optimizer.learning_rate = -0.1")
