"""gin: every file parses, every experiment builds abstractly, overrides take effect, and configuration errors
are explained."""
import glob
import os
import re

import gin
import jax
import pytest

from shardline.launch import gin_config
from shardline.launch import plan_inputs
from shardline.training.state import batch_checks
from shardline.training.state import run_setup as setup
from shardline.training.planning import targets
from tests import helpers
from tests.launch import test_plan
from shardline.core.errors import UserError

GIN_FILES = sorted(glob.glob(os.path.join(gin_config.GIN_DIR, "**", "*.gin"), recursive=True))
EXPERIMENT = "experiments/vit22b_tiny_digits_cpu8.gin"


def test_gin_folder_is_found():
  assert len(GIN_FILES) > 10, gin_config.GIN_DIR


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: os.path.relpath(p, gin_config.GIN_DIR))
def test_every_gin_file_parses(path):
  gin.add_config_file_search_path(gin_config.GIN_DIR)
  gin.parse_config_file(path)


@pytest.mark.parametrize("path", [p for p in GIN_FILES if "/experiments/" in p],
                         ids=lambda p: os.path.basename(p))
def test_experiments_carry_their_command_and_only_include_and_override(path):
  text = open(path).read()
  header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
  assert re.search(r"(shardline \w+|python -m benchmarks\.\w+) .*--gin_file=experiments/" + re.escape(os.path.basename(path)), header)
  for line in text.splitlines():
    line = line.strip()
    assert not line or line.startswith(("#", "include ", "import ")) or "=" in line


def test_overrides_take_effect():
  gin_config.parse([EXPERIMENT], [gin_config.override_to_binding("train.steps=7"),
                                  gin_config.override_to_binding("MODEL_DIR='/tmp/x'"),
                                  gin_config.override_to_binding("vit22b.ViT22BConfig.depth=3")])
  assert gin.query_parameter("train.steps") == 7
  assert gin.query_parameter("MODEL_DIR/macro.value") == "/tmp/x"
  assert gin.query_parameter("vit22b.ViT22BConfig.depth") == 3
  # Bindings from the files stay where not overridden.
  assert gin.query_parameter("partitioning.make_mesh.ici_tensor") == 2


def test_unknown_configurable_offers_close_matches():
  with pytest.raises(UserError) as e:
    gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'", "trian.steps = 3"])
  assert "no configurable named 'trian'" in str(e.value) and "Did you mean" in str(e.value)
  assert "train" in str(e.value).split("Did you mean", 1)[1]


def test_unknown_parameter_offers_close_matches():
  with pytest.raises(UserError) as e:
    gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'", "train.batchsize = 3"])
  assert "has no parameter 'batchsize'" in str(e.value) and "Did you mean batch_size" in str(e.value)


def test_missing_required_values_are_all_listed_at_once():
  with pytest.raises(UserError) as e:
    gin_config.parse(["models/vit22b/tiny.gin", "runs/train.gin"], ["TASK = 'digits'"])
  message = str(e.value)
  for name in ("MODEL_DIR", "BATCH_SIZE", "NUM_CLASSES", "IMAGE_SIZE", "CHANNELS", "train.steps"):
    assert name in message, name
  assert "6 required value(s)" in message


def test_unquoted_string_override():
  with pytest.raises(UserError, match=r"write --gin.MODEL_DIR=\"'/tmp/run'\""):
    gin_config.override_to_binding("MODEL_DIR=/tmp/run")


def test_missing_gin_file():
  with pytest.raises(UserError, match="searches the current directory"):
    gin_config.parse(["experiments/no_such.gin"])


@pytest.mark.full
@pytest.mark.parametrize("experiment", sorted(os.path.basename(p)[:-4] for p in GIN_FILES if "/experiments/" in p))
def test_every_experiment_builds_its_model_mesh_and_shardings(experiment):
  """Abstractly (eval_shape, no compile): the model from its gin files, its mesh on the devices the experiment
  asks for (8 simulated CPU devices, or one for the single-accelerator ones; pod experiments on their TPU topology
  in test_plan.py), every parameter's and optimizer state's sharding, and the batch against the mesh."""
  gin_config.parse([f"experiments/{experiment}.gin"], [], allow_missing=plan_inputs.PLAN_NEEDS_NO)
  inputs = plan_inputs.plan_run()
  if experiment in test_plan.POD_EXPERIMENTS:
    devices = targets.tpu_devices(targets.resolve(test_plan.POD_EXPERIMENTS[experiment]))[0]
  else:
    try:
      devices = jax.devices()[:gin.query_parameter("runtime.cpu_devices")]
    except ValueError:  # no simulated devices bound: one accelerator
      devices = jax.devices()[:1]
  run = setup.build(inputs.model, inputs.steps, inputs.batch_size, devices=devices)
  batch_checks.check_batch_divisible(inputs.batch_size, run.partitioner)
  batch_checks.check_microbatches(inputs.batch_size, inputs.microbatches, run.partitioner)
  assert run.partitioner.mesh.devices.size == len(devices)
  leaves = jax.tree.leaves(run.abstract_state.params)
  assert leaves and len(jax.tree.leaves(run.state_sharding.params)) == len(leaves)


@pytest.mark.full
def test_a_folder_named_like_an_include_in_the_working_directory(tmp_path):
  for name in ("runs", "models", "tasks"):  # `make demo` writes runs/; users keep models/ and tasks/ folders
    (tmp_path / name).mkdir()
  result = helpers.run_shardline("plan", f"--gin_file={EXPERIMENT}", "--topology=8xH100", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "FITS" in result.stdout
