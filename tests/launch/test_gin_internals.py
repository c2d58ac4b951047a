"""The one wrapper of gin-config's private symbols (launch/gin_internals.py), checked against the installed gin: if
an upgrade changes them, these fail here rather than as a confusing error in a user's run."""
import re
import subprocess
import sys

import gin
import pytest

from shardline.launch import gin_config
from shardline.launch import gin_internals

EXPERIMENT = "experiments/vit22b_tiny_digits_cpu8.gin"


def test_registered_names_and_parameters():
  gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'"])
  names = gin_internals.registered_names()
  assert {"train", "vit22b.ViT22BConfig", "ViT22BConfig", "train.checkpointing", "checkpointing"} <= set(names)
  assert "steps" in gin_internals.parameters_of("train")
  assert "keep" in gin_internals.parameters_of("train.checkpointing")
  assert gin_internals.parameters_of("no.such.thing") == []


def test_unset_required_lists_every_missing_value():
  gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'"], finalize=False)
  assert gin_internals.unset_required() == []
  gin.parse_config("MODEL_DIR = %gin.REQUIRED\nBATCH_SIZE = %gin.REQUIRED")
  assert gin_internals.unset_required() == ["BATCH_SIZE/macro.value", "MODEL_DIR/macro.value"]


def test_unbind_references_to_a_skipped_configurable():
  gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'"], finalize=False)
  gin.parse_config("train.evaluators = {'x': @elsewhere.not_installed()}", skip_unknown=["elsewhere.not_installed"])
  assert gin_internals.unbind_references_to(["elsewhere.not_installed"]) == ["train.evaluators"]
  assert gin.query_parameter("train.evaluators") is None


def test_search_paths_are_known():
  gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'"])
  assert gin_internals.is_search_path(gin_config.GIN_DIR)
  assert not gin_internals.is_search_path("/no/such/folder")


@pytest.mark.parametrize("old, new", [("train.keep_checkpoints", "train.checkpointing.keep"),
                                      ("train.hang_timeout_s", "train.watchdog.timeout_s")])
def test_a_renamed_parameter_names_its_new_name(old, new):
  with pytest.raises(gin_config.UserError, match=f"was renamed to {new}"):
    gin_config.parse([EXPERIMENT], ["MODEL_DIR = '/tmp/x'", f"{old} = 1"])


@pytest.mark.full
def test_a_configurable_whose_module_is_not_imported_names_the_import():
  # In a fresh interpreter: once any test of this process has imported atari_play, gin knows the configurable.
  probe = ("import sys\n"
           "from shardline.launch import gin_config\n"
           "assert 'shardline.training.evaluation.atari_play' not in sys.modules\n"
           "try:\n"
           f"  gin_config.parse([{EXPERIMENT!r}], [\"MODEL_DIR = '/tmp/x'\", "
           "\"EVALUATORS = {'play': @evaluators.play_atari()}\"])\n"
           "except gin_config.UserError as error:\n"
           "  print(error)\n")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
  assert re.search(r"evaluators.play_atari' is registered.*defined in shardline.training.evaluation.atari_play.*"
                   r"--gin_bindings='import shardline.training.evaluation.atari_play'", result.stdout, re.S), (
                       result.stdout + result.stderr)
