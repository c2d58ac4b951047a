"""Multi-process runs for real: 2 processes x 4 CPU devices over gloo against 1 process x 8, a checkpoint that
restores in one process, and a missing peer that fails fast with a count instead of hanging."""
import re
import subprocess
import time

import numpy as np

from shardline.launch import local
from tests import helpers

STEPS = 4


def test_two_processes_match_one_and_their_checkpoint_restores_in_one(tmp_path):
  train = helpers.tiny_train_args(tmp_path / "multi", STEPS)
  multi = helpers.run_shardline("launch-local", "--processes", "2", "--devices-per-process", "4", "--", *train)
  assert multi.returncode == 0, multi.stdout[-3000:]
  assert "[p1]" in multi.stdout and "Training finished" in multi.stdout
  single = helpers.run_shardline(*helpers.tiny_train_args(tmp_path / "single", STEPS))
  assert single.returncode == 0, single.stderr[-3000:]
  multi_losses = helpers.train_losses(tmp_path / "multi")
  single_losses = helpers.train_losses(tmp_path / "single")
  assert sorted(multi_losses) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([multi_losses[s] for s in range(1, STEPS + 1)],
                             [single_losses[s] for s in range(1, STEPS + 1)], rtol=1e-5)

  evaluated = helpers.run_shardline("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                    f"--gin.MODEL_DIR='{tmp_path / 'multi'}'")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  accuracy = re.search(r"accuracy ([\d.]+)%", evaluated.stdout).group(1)
  assert f"eval_accuracy {accuracy}%" in multi.stdout


def test_a_missing_process_fails_fast_with_a_count(tmp_path):
  port = local._free_port_pair()  # pylint: disable=protected-access
  distributed = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=3", "--distributed_timeout=6"]
  start = time.time()
  coordinator = subprocess.Popen(
      helpers.shardline_command(*helpers.tiny_train_args(tmp_path / "run", 2), *distributed, "--process_id=0"),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=helpers.subprocess_env(), cwd=helpers.REPO)
  worker = helpers.run_shardline(*helpers.tiny_train_args(tmp_path / "run", 2), *distributed, "--process_id=1",
                                 timeout=120)
  _, coordinator_err = coordinator.communicate(timeout=120)
  assert time.time() - start < 90  # bounded: no hang
  assert coordinator.returncode == 2 and worker.returncode == 2
  assert "2 of 3 processes joined within 6s; missing process_id(s) [2]" in coordinator_err
  assert "is the command running on every host" in coordinator_err.lower()
  assert "not all 3 processes did" in worker.stderr


def test_a_worker_without_its_coordinator_fails_fast(tmp_path):
  port = local._free_port_pair()  # pylint: disable=protected-access
  result = helpers.run_shardline(*helpers.tiny_train_args(tmp_path / "run", 2),
                                 f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
                                 "--distributed_timeout=3", timeout=120)
  assert result.returncode == 2
  assert f"could not reach process 0 at 127.0.0.1:{port + 1} within 3s" in result.stderr
