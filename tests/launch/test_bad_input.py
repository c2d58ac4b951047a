"""Every kind of bad input, through the CLI's own entry point in this process (argument parsing, gin, the runtime
and the command, as the console script runs them; tests/launch/test_smoke.py runs one bad input through the
console script itself): one paragraph on stderr that says what is wrong and how to fix it, exit code 2, no
traceback, and nothing of the user's created, changed or lost."""
import os
import shutil

import pytest

from tests import helpers

# One worker runs this module, so its module-scoped run is made once (pytest-xdist's loadgroup).
pytestmark = pytest.mark.xdist_group("bad_input")

EXPERIMENT = "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin"


def _cases(tmp):
  run = f"--gin.MODEL_DIR='{tmp}/run'"
  return {
      "unknown configurable": (["train", EXPERIMENT, run, "--gin.trian.steps=3"],
                               ["no configurable named 'trian'", "Did you mean", "train"]),
      "unknown parameter": (["train", EXPERIMENT, run, "--gin.train.batchsize=3"],
                            ["has no parameter 'batchsize'", "Did you mean batch_size"]),
      "missing required values": (["train", EXPERIMENT, "--gin.BATCH_SIZE=%gin.REQUIRED"],
                                  ["2 required value(s)", "MODEL_DIR", "BATCH_SIZE"]),
      "unquoted string": (["train", EXPERIMENT, f"--gin.MODEL_DIR={tmp}/run"],
                          ["is not a gin literal", "--gin.MODEL_DIR=\"'"]),
      "unknown seqio task": (["train", EXPERIMENT, run, "--gin.TASK='digts'"],
                             ["Unknown seqio task 'digts'", "Did you mean: digits"]),
      "mesh does not match devices": (["train", EXPERIMENT, run, "--gin.partitioning.make_mesh.ici_tensor=4"],
                                      ["needs 16 devices but 8 are available", "-1"]),
      "indivisible batch": (["train", EXPERIMENT, run, "--gin.BATCH_SIZE=130"],
                            ["130 is not divisible by the data-parallel size 4", "Use a multiple of 4"]),
      "indivisible rule": (["train", EXPERIMENT, run, "--gin.vit22b.ViT22BConfig.mlp_dim=255"],
                           ["encoder/layers/mlp_in", "logical axis 'mlp'", "'mlp' -> 'tensor'"]),
      "missing data directory": (["train", EXPERIMENT, "--gin_file=tasks/tfds_image.gin", run,
                                  "--gin.tasks.tfds_image_classification.tfds_name='cifar10'",
                                  f"--gin.tasks.tfds_image_classification.data_dir='{tmp}/no_data'",
                                  "--gin.NUM_CLASSES=10", "--gin.IMAGE_SIZE=8", "--gin.CHANNELS=1"],
                                 ["does not exist", "tfds build cifar10"]),
      "negative learning rate": (["train", EXPERIMENT, run, "--gin.optimizer.make_optimizer.learning_rate=-0.1"],
                                 ["learning_rate = -0.1 is out of range", "> 0.0"]),
      "unknown rule set": (["train", EXPERIMENT, run, "--gin.partitioning.rule_set.name='fsdp-tensor'"],
                           ["Unknown partitioning rule set 'fsdp-tensor'", "fsdp_tensor"]),
      "zero expert capacity": (["train", "--gin_file=experiments/limoe_tiny_digits_cpu8.gin", run,
                                "--gin.limoe.LIMoEConfig.capacity_factor=0.0"],
                               ["capacity_factor=0.0 must be positive", "limoe.LIMoEConfig"]),
      "malformed bucket URL": (["train", EXPERIMENT, "--gin.MODEL_DIR='gs:/bucket/run'"],
                               ["MODEL_DIR (train.model_dir) = 'gs:/bucket/run' is not a bucket URL", "gs://bucket/path"]),
      "indivisible microbatches": (["train", EXPERIMENT, run, "--gin.MICROBATCHES=3"],
                                   ["train.microbatches = 3 does not divide the per-device batch",
                                    "each device holds 32 examples", "[1, 2, 4, 8, 16, 32]"]),
      "profile past the end": (["train", EXPERIMENT, run, "--gin.train.steps=10", "--gin.train.profile.steps=(8, 5)"],
                               ["train.profile.steps = (8, 5) profiles steps 8..12, past the end of training"]),
      "negative hang timeout": (["train", EXPERIMENT, run, "--gin.train.watchdog.timeout_s=-5"],
                                ["train.watchdog.timeout_s = -5; it must be a positive number of seconds"]),
      "heads that do not divide the width": (["train", EXPERIMENT, run, "--gin.vit22b.ViT22BConfig.num_heads=3"],
                                             ["num_heads=3 must divide width=64", "head='gap'"]),
      "init_from without a checkpoint": (["train", EXPERIMENT, run, "--gin.train.init_from=@init_from()",
                                          f"--gin.init_from.path='{tmp}/pretrained'"],
                                         ["train.init_from: there is no committed checkpoint in",
                                          f"{tmp}/pretrained/checkpoints"]),
      "frozen regex that matches nothing": (["train", EXPERIMENT, run,
                                             "--gin.optimizer.make_optimizer.frozen=('encoder/mlp.*',)"],
                                            ["'encoder/mlp.*' match no parameter", "encoder/layers/mlp_in"]),
      "eval without checkpoints": (["eval", EXPERIMENT, run], ["No checkpoint found in", "Train first"]),
      "missing precipitation store": (["train", "--gin_file=experiments/metnet2_tiny_sim_cpu8.gin",
                                       "--gin_file=tasks/precipitation_zarr.gin", run,
                                       f"--gin.tasks.precipitation_zarr.path='{tmp}/no_store'"],
                                      ["Precipitation store", "does not exist"]),
  }


def _check(result, needles):
  assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
  message = result.stderr.strip()
  assert message.startswith("shardline: error:") and "Traceback" not in message, message
  assert "\n\n" not in message  # one paragraph
  for needle in needles:
    assert needle in message, (needle, message)


def test_bad_input_matrix(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "mine.txt").write_text("keep")
  failures = []
  for name, (args, needles) in _cases(tmp_path).items():
    try:
      _check(helpers.run_cli_in_process(*args), needles)
    except AssertionError as e:
      failures.append(f"{name}: {e}")
  assert not failures, "\n".join(failures)
  assert sorted(os.listdir(tmp_path / "run")) == ["mine.txt"]  # nothing created, nothing lost


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """One tiny 3-step run, trained once; each damage case corrupts its own copy."""
  model_dir = tmp_path_factory.mktemp("trained") / "run"
  trained = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, 3))
  assert trained.returncode == 0, trained.stderr[-2000:]
  return model_dir


@pytest.mark.full
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint(tmp_path, trained_run, damage):
  model_dir = tmp_path / "run"
  shutil.copytree(trained_run, model_dir)
  data = model_dir / "checkpoints" / "3" / "state" / "ocdbt.process_0" / "d"
  for chunk in data.iterdir():
    raw = bytearray(chunk.read_bytes())
    raw = raw[:len(raw) // 2] if damage == "truncate" else bytearray(b ^ 0x5A for b in raw)
    chunk.write_bytes(bytes(raw))
  snapshot = tmp_path / "snapshot"
  shutil.copytree(model_dir, snapshot)
  result = helpers.run_cli_in_process("eval", EXPERIMENT, f"--gin.MODEL_DIR='{model_dir}'")
  _check(result, ["Checkpoint step 3", "truncated or corrupt", "deleted nothing", "aside"])
  for root, _, files in os.walk(snapshot):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), snapshot)
      assert (model_dir / rel).read_bytes() == (snapshot / rel).read_bytes(), rel


def test_init_from_another_architecture_names_every_mismatch(tmp_path, trained_run):
  model_dir = tmp_path / "fine_tune"
  result = helpers.run_cli_in_process(*helpers.tiny_train_args(
      model_dir, 3, "--gin.vit22b.ViT22BConfig.mlp_dim=128", "--gin.train.init_from=@init_from()",
      f"--gin.init_from.path='{trained_run}'"))
  _check(result, ["train.init_from cannot initialise this model", "encoder/layers/mlp_in: checkpoint (4, 64, 256)",
                  "model (4, 64, 128)", "encoder/layers/mlp_out", "map_head/mlp", "Nothing was written"])
  assert not model_dir.exists()
