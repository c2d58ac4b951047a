"""A few steps of `shardline train` through the console script in a subprocess, then (in this process, through the
CLI's entry point) a resume that continues from the saved step, a finished run started again, and eval."""
import json
import os
import re

import pytest

from tests import helpers

EXPERIMENT = "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin"


def _train_args(model_dir, steps):
  return ("train", EXPERIMENT, f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={steps}",
          "--gin.train.log_every=2", "--gin.train.eval_every=4", "--gin.train.checkpoint_every=2")


@pytest.mark.full
def test_train_resume_and_eval(tmp_path):
  model_dir = tmp_path / "run"
  first = helpers.run_shardline(*_train_args(model_dir, 4), timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "steps 0->4" in first.stdout and "Training finished" in first.stdout
  assert re.search(r"step 4 \| .*loss", first.stdout)
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["2", "4"]
  for name in ("config.gin", "operative_config.gin"):
    assert "train.steps = 4" in (model_dir / name).read_text()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(model_dir / "train"))
  assert re.search(r"Goodput: [\d.]+% of [\d.]+ s trained", first.stdout) and "  compile " in first.stdout
  goodput = json.loads((model_dir / "metrics" / "goodput.jsonl").read_text().splitlines()[-1])
  fractions = [v for k, v in goodput.items() if k.endswith("_fraction")]
  assert goodput["step"] == 4 and abs(sum(fractions) - 1) < 1e-6 and goodput["goodput/compile_seconds"] > 0
  assert re.search(r"step 4 \| .*data wait [\d.]+ ms \([\d.]+%\)", first.stdout)

  second = helpers.run_cli_in_process(*_train_args(model_dir, 6))
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resuming from checkpoint step 4" in second.stdout and "steps 4->6" in second.stdout
  assert "step 2 |" not in second.stdout  # it did not start over
  assert sorted(os.listdir(model_dir / "checkpoints"), key=int) == ["2", "4", "6"]

  finished = helpers.run_cli_in_process(*_train_args(model_dir, 6))  # a finished run started again (`make demo` twice) ends at once
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert "steps 6->6" in finished.stdout and "Training finished" in finished.stdout

  evaluated = helpers.run_cli_in_process("eval", EXPERIMENT, f"--gin.MODEL_DIR='{model_dir}'")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  train_acc = re.search(r"step 6 \| eval_accuracy ([\d.]+)%", second.stdout).group(1)
  assert "Evaluated checkpoint step 6" in evaluated.stdout and f"accuracy {train_acc}%" in evaluated.stdout


@pytest.mark.full
def test_bad_input_exits_nonzero_with_one_paragraph(tmp_path):
  result = helpers.run_shardline("train", EXPERIMENT, f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                                 "--gin.partitioning.make_mesh.ici_tensor=3")
  assert result.returncode == 2
  assert result.stderr.strip().startswith("shardline: error:") and "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()  # stopped before creating anything
