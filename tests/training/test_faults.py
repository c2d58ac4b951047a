"""Faults proven for real: processes SIGKILLed mid-training and mid-save, NaNs, and a mismatched MODEL_DIR."""
import os
import random
import signal
import subprocess
import time

import pytest

from tests import helpers

# One worker runs this module, so its module-scoped run is made once (pytest-xdist's loadgroup).
pytestmark = pytest.mark.xdist_group("faults")

STEPS = 12
# Random augmentation on (an Inception crop and a flip of every 8 x 8 digit, seeded per example and epoch).
AUGMENTED = ("--gin.stream.train_transform=@data.train_images()", "--gin.data.train_images.size=8",
             "--gin.data.train_images.channels=1", "--gin.data.train_images.area_range=(0.5, 1.0)")


def _popen(args):
  return subprocess.Popen(helpers.shardline_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=helpers.subprocess_env(), cwd=helpers.REPO)


def _finish(args, timeout=300):
  result = helpers.run_shardline(*args, timeout=timeout)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result


def _finish_in_process(args):
  """A run no signal is sent to, in this process (helpers.run_cli_in_process)."""
  result = helpers.run_cli_in_process(*args)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result


def _tree(path):
  """Every file under path with its size and mtime: to prove nothing was changed."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      stat = os.stat(full)
      out[os.path.relpath(full, path)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("reference")
  _finish(helpers.tiny_train_args(model_dir, STEPS, *AUGMENTED))
  losses = helpers.train_losses(model_dir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return losses, helpers.train_metric(model_dir, "batch_fingerprint")


@pytest.mark.full
def test_sigkill_mid_training_then_resume_gives_identical_batches_and_losses(tmp_path, reference_losses):
  """With augmentation on, and loader workers in the killed and resumed run (none in the reference)."""
  kill_after = random.Random(os.getpid()).randint(4, 9)  # a random step, reported on failure
  model_dir = tmp_path / "run"
  args = helpers.tiny_train_args(model_dir, STEPS, *AUGMENTED, "--gin.stream.workers=1")
  process = _popen(args)
  for line in process.stdout:
    if not line.startswith("step ") or int(line.split()[1]) < kill_after:
      continue
    checkpoints = model_dir / "checkpoints"
    if any(d.isdigit() for d in os.listdir(checkpoints)):  # at least one save has committed
      kill_after = int(line.split()[1])
      process.send_signal(signal.SIGKILL)
      break
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL, f"the run ended before step {kill_after}"

  resumed = _finish(args)
  restored = int(resumed.stdout.split("Resuming from checkpoint step ")[1].split()[0])
  assert 0 < restored <= kill_after and restored % 3 == 0, (kill_after, restored)
  losses, fingerprints = helpers.train_losses(model_dir), helpers.train_metric(model_dir, "batch_fingerprint")
  for step in range(restored + 1, STEPS + 1):
    assert fingerprints[step] == reference_losses[1][step], (step, kill_after, restored)
    assert losses[step] == reference_losses[0][step], (step, kill_after, restored)  # bit for bit


@pytest.mark.full
def test_sigkill_during_an_in_flight_save(tmp_path, reference_losses):
  model_dir = tmp_path / "run"
  (model_dir / "user_notes").mkdir(parents=True)
  (model_dir / "user_notes" / "keep.txt").write_text("mine")
  args = helpers.tiny_train_args(model_dir, STEPS, *AUGMENTED)
  process = _popen(args)
  checkpoints = model_dir / "checkpoints"
  killed_while_writing = None
  deadline = time.time() + 240
  while process.poll() is None and time.time() < deadline:
    if checkpoints.is_dir():
      writing = [d for d in os.listdir(checkpoints) if "tmp" in d]
      committed = [d for d in os.listdir(checkpoints) if d.isdigit()]
      if writing and committed:  # the second save is in flight and the first is committed
        process.send_signal(signal.SIGKILL)
        killed_while_writing = writing[0]
        break
    time.sleep(0.002)
  process.wait(timeout=60)
  assert killed_while_writing, "never caught a save in flight"
  assert process.returncode == -signal.SIGKILL
  assert (checkpoints / killed_while_writing).exists()  # the incomplete save is really there

  resumed = _finish(args)
  restored = int(resumed.stdout.split("Resuming from checkpoint step ")[1].split()[0])
  in_flight_step = int(killed_while_writing.split(".")[0])  # orbax writes <step>.orbax-checkpoint-tmp-<n>
  assert restored < in_flight_step  # the incomplete save was ignored; the previous committed one was used
  assert not any("tmp" in d for d in os.listdir(checkpoints))  # shardline's own partial save is cleaned up
  assert (model_dir / "user_notes" / "keep.txt").read_text() == "mine"  # nothing of the user's is touched
  losses = helpers.train_losses(model_dir)
  for step in range(restored + 1, STEPS + 1):
    assert losses[step] == reference_losses[0][step], step


@pytest.mark.full
def test_mismatched_model_dir_stops_and_changes_nothing(tmp_path):
  model_dir = tmp_path / "run"
  _finish_in_process(helpers.tiny_train_args(model_dir, 3))
  before = _tree(model_dir)
  other = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, 6, "--gin.vit22b.ViT22BConfig.depth=3"))
  assert other.returncode == 2
  assert "config.depth: checkpoint=4, now=3" in other.stderr and "Nothing was restored" in other.stderr
  assert _tree(model_dir) == before
  # An implementation switch is not a different model: it resumes.
  switched = _finish_in_process(
      helpers.tiny_train_args(model_dir, 4, "--gin.vit22b.ViT22BConfig.linear_impl='async'"))
  assert "Resuming from checkpoint step 3" in switched.stdout


def test_nan_stops_the_run_with_metrics_written_and_no_bad_checkpoint(tmp_path):
  model_dir = tmp_path / "run"
  result = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, STEPS, "--gin.train.faults.nan_at_step=4"))
  assert result.returncode == 2, result.stderr[-2000:]
  assert "became NaN/Inf at or before step 5" in result.stderr and "latest checkpoint is step 3" in result.stderr
  assert sorted(helpers.train_losses(model_dir)) == [1, 2, 3, 4, 5]  # written up to the bad step
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["3"]
  evaluated = helpers.run_cli_in_process("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                         f"--gin.MODEL_DIR='{model_dir}'")
  assert evaluated.returncode == 0 and "loss nan" not in evaluated.stdout.lower()


@pytest.mark.full
def test_nan_skip_policy_counts_and_continues(tmp_path):
  model_dir = tmp_path / "run"
  result = _finish_in_process(helpers.tiny_train_args(model_dir, 6, "--gin.train.faults.nan_at_step=2",
                                                      "--gin.train.nonfinite_policy='skip'"))
  assert "skipped non-finite updates: 1" in result.stdout
  assert "were skipped" in result.stdout
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["3", "6"]


def _preempted_step(output: str) -> int:
  assert "shardline: preempted (SIGTERM) at step " in output, output[-3000:]
  return int(output.split("shardline: preempted (SIGTERM) at step ")[1].split(";")[0])


@pytest.mark.full
def test_sigterm_saves_the_agreed_step_exits_75_and_the_resume_is_exact(tmp_path, reference_losses):
  model_dir = tmp_path / "run"
  args = helpers.tiny_train_args(model_dir, STEPS, *AUGMENTED)
  # The host stalls before step 7, so the signal sent after step 4 always lands before the run ends.
  process = _popen(args + ("--gin.train.faults.stall=(6, 20)",))
  seen = []
  for line in process.stdout:
    seen.append(line)
    if line.startswith("step 4 "):
      process.send_signal(signal.SIGTERM)
      break
  output = "".join(seen) + process.stdout.read()
  process.wait(timeout=120)
  assert process.returncode == 75, output[-3000:]
  step = _preempted_step(output)
  assert 4 <= step <= 7 and f"checkpoint {step} is committed" in output, output[-2000:]
  assert str(step) in os.listdir(model_dir / "checkpoints")

  resumed = _finish(args)
  assert f"Resuming from checkpoint step {step}" in resumed.stdout
  losses = helpers.train_losses(model_dir)
  for later in range(step + 1, STEPS + 1):
    assert losses[later] == reference_losses[0][later], (later, step)  # bit for bit


@pytest.mark.full
def test_sigterm_while_compiling_stops_cleanly(tmp_path):
  model_dir = tmp_path / "run"
  process = _popen(helpers.tiny_train_args(model_dir, STEPS) + ("--gin.train.faults.stall=(1, 20)",))
  seen = []
  for line in process.stdout:
    seen.append(line)
    if line.startswith("Training "):  # printed just before the train step compiles
      process.send_signal(signal.SIGTERM)
      break
  output = "".join(seen) + process.stdout.read()
  process.wait(timeout=120)
  assert process.returncode == 75, output[-3000:]
  step = _preempted_step(output)
  assert step in (0, 1, 2), output[-2000:]  # held until the first step boundary after the compile
  if step == 0:
    assert "no step was trained since the start, so nothing was saved" in output
    assert not os.listdir(model_dir / "checkpoints")
  else:
    assert f"checkpoint {step} is committed" in output and str(step) in os.listdir(model_dir / "checkpoints")


@pytest.mark.full
def test_sigterm_during_an_evaluation_saves_when_it_ends(tmp_path):
  model_dir = tmp_path / "run"
  args = helpers.tiny_train_args(model_dir, STEPS, "--gin.train.eval_every=3")
  process = _popen(args + ("--gin.train.faults.stall=(3, 10, 'eval')",))  # the evaluation after step 3 stalls
  seen = []
  for line in process.stdout:
    seen.append(line)
    if line.startswith("step 3 "):  # the metrics line comes just before that evaluation
      process.send_signal(signal.SIGTERM)
      break
  output = "".join(seen) + process.stdout.read()
  process.wait(timeout=120)
  assert process.returncode == 75, output[-3000:]
  assert "step 3 | eval_accuracy" in output  # the evaluation finished
  assert _preempted_step(output) == 3 and "checkpoint 3 is committed" in output
