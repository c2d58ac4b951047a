"""The benchmark harness on a machine with JAX but without TensorFlow, seqio, ALE or the loader's libraries (the GPU
machines): the packages are hidden from Python as the GPU suite's rehearsal hides them."""
import glob
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_suite
from shardline.launch import gin_config
from shardline.launch import gin_files
from tests import helpers


def _train_step(*args):
  """benchmarks.train_step with every package hidden that the GPU machine lacks or that a synthetic-batch stage
  of the GPU suite must do without (benchmarks/gpu_suite.py, benchmarks/rehearsal/sitecustomize.py)."""
  stage = next(s for s in gpu_suite.STAGES if s.name == "vit22b")
  env = helpers.subprocess_env({"SHARDLINE_HIDE_PACKAGES": ",".join(gpu_suite.hidden_packages(stage)),
                                "PYTHONPATH": os.pathsep.join([gpu_suite.HIDER, helpers.REPO])})
  return subprocess.run([sys.executable, "-m", "benchmarks.train_step",
                         "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin", "--steps=1", "--warmup=1", *args],
                        capture_output=True, text=True, timeout=600, env=env, cwd=helpers.REPO)


@pytest.mark.full
def test_train_step_benchmark_runs_without_data_libraries():
  result = _train_step()
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| vit22b_tiny_digits_cpu8.gin | 8 x cpu |" in result.stdout
  assert "Without tensorflow" in result.stderr  # the skipped modules are named


@pytest.mark.full
def test_gin_typos_still_fail_without_data_libraries():
  result = _train_step("--gin.vit22b.ViT22BConfig.dept=2")
  assert result.returncode != 0
  assert "has no parameter 'dept'" in result.stderr and "Did you mean depth" in result.stderr, result.stderr[-2000:]


def test_nothing_is_skipped_where_the_data_libraries_are_installed():
  experiments = sorted(glob.glob(os.path.join(gin_config.GIN_DIR, "experiments", "*.gin")))
  imports = gin_files.read(experiments, [gin_config.GIN_DIR]).imports
  assert "shardline.tasks.atari.task" in imports and "shardline.models.vit22b" in imports
  assert gin_files.import_tolerantly(imports) == ([], [])


def test_configurable_names_are_read_from_the_source():
  assert gin_files.configurables_in("shardline.training.loop.trainer") == ["train"]
  assert gin_files.configurables_in("shardline.training.evaluation.atari_play") == ["evaluators.play_atari"]
  assert "tasks.atari_episodes" in gin_files.configurables_in("shardline.tasks.atari.task")
  assert "train.checkpointing" in gin_files.configurables_in("shardline.training.loop.settings")
