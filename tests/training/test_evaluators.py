"""Named evaluators: each on its own cadence during training, any of them from `shardline eval`, bad input."""
import json

import pytest

from shardline.core.errors import UserError
from shardline.training.evaluation import evaluators
from shardline.training.evaluation import fewshot
from tests import helpers

EVALUATORS = ("--gin.EVALUATORS={'eval': @split_eval(), 'fewshot': @fewshot()}", "--gin.split_eval.every=2",
              "--gin.fewshot.every=3", "--gin.fewshot.shots=(1, 5)", "--gin.fewshot.seeds=2")


def _logged_steps(model_dir, name):
  with open(model_dir / "metrics" / f"{name}.jsonl") as f:
    return [json.loads(line) for line in f]


@pytest.mark.full
def test_evaluators_run_on_their_cadence_and_from_shardline_eval(tmp_path):
  model_dir = tmp_path / "run"
  trained = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, 6), *EVALUATORS)
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert [row["step"] for row in _logged_steps(model_dir, "eval")] == [2, 4, 6]
  fewshot_rows = _logged_steps(model_dir, "fewshot")
  assert [row["step"] for row in fewshot_rows] == [3, 6]
  assert set(fewshot_rows[-1]) == {"step", "fewshot_1shot_accuracy", "fewshot_1shot_accuracy_std",
                                   "fewshot_5shot_accuracy", "fewshot_5shot_accuracy_std"}
  assert "step 3 | fewshot_1shot_accuracy" in trained.stdout and "step 4 | eval_accuracy" in trained.stdout
  assert "fewshot 5shot accuracy" in trained.stdout  # the end-of-run summary
  evaluated = helpers.run_cli_in_process("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                    f"--gin.MODEL_DIR='{model_dir}'", *EVALUATORS, "--evaluator=fewshot")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  line = next(l for l in evaluated.stdout.splitlines() if l.startswith("Evaluated checkpoint step 6"))
  assert "with evaluator 'fewshot'" in line and "fewshot_1shot_accuracy" in line and "fewshot_5shot_accuracy" in line
  logged = fewshot_rows[-1]["fewshot_5shot_accuracy"]
  assert f"fewshot_5shot_accuracy {100 * logged:.2f}%" in line  # the same checkpoint, the same draws
  assert "eval_accuracy" not in evaluated.stdout


def test_bad_evaluators_stop_before_anything_is_written(tmp_path):
  model_dir = tmp_path / "run"
  too_many_shots = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, 2), *EVALUATORS,
                                         "--gin.fewshot.shots=(500,)")
  assert too_many_shots.returncode == 2 and "asks for 500 shots per class" in too_many_shots.stderr
  assert "Traceback" not in too_many_shots.stderr and not model_dir.exists()
  with pytest.raises(UserError, match="must be a lower-case identifier"):
    evaluators.check({"Few Shot": fewshot.FewShot()}, "train.evaluators")
  with pytest.raises(UserError, match="must be a positive number of steps"):
    evaluators.check({"eval": evaluators.SplitEval(every=0)}, "train.evaluators")
  with pytest.raises(UserError, match="not an evaluator"):
    evaluators.check({"eval": "test"}, "train.evaluators")
  with pytest.raises(UserError, match="linear: no such evaluator; this configuration has eval, fewshot"):
    evaluators.select({"eval": evaluators.SplitEval(), "fewshot": fewshot.FewShot()}, ["linear"])
