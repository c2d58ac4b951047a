"""Every shipped experiment runs through the CLI, so a sharding or input-layer mismatch shows up in CI and not on
a rented pod:

- each `experiments/*_cpu8.gin` trains two steps with `shardline train` from a fresh MODEL_DIR and is evaluated
  with `shardline eval`; an experiment that starts from another run (a teacher, a pretrained or a dense run)
  gets that run first, from this test;
- each GPU and pod experiment trains one step on the 8-device CPU mesh through a stand-in
  (tests/launch/standins/) that changes only sizes and keeps the task type, the rule set, the mesh axes (scaled
  down) and the input layer, on small data the test writes where the real data is absent.

The commands run in this process (helpers.run_cli_in_process), so its compilations are shared between them.
Only sizes are overridden here: steps, batch, and the amount of generated data.
"""
import glob
import os

import pytest

from tests import fake_data
from tests import helpers

pytestmark = pytest.mark.full

EXPERIMENTS = os.path.join(helpers.REPO, "gin", "experiments")
STANDINS = os.path.join(os.path.dirname(__file__), "standins")
CPU_EXPERIMENTS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(EXPERIMENTS, "*_cpu8.gin")))
LARGE_EXPERIMENTS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(EXPERIMENTS, "*.gin"))
                           if not p.endswith("_cpu8.gin"))
# An experiment that starts from another run: its parent, and the gin macro that names the parent's MODEL_DIR.
PARENTS = {
    "vit22b_tiny_digits_linear_probe_cpu8": ("vit22b_tiny_digits_cpu8", "PRETRAINED"),
    "vit22b_small_digits_distill_cpu8": ("vit22b_tiny_digits_cpu8", "TEACHER"),
    "limoe_tiny_digits_upcycled_cpu8": ("limoe_dense_tiny_digits_cpu8", "DENSE"),
    "mgdt_tiny_roadrunner_finetune_cpu8": ("mgdt_tiny_atari4_pretrain_cpu8", "PRETRAINED"),
}
# An experiment that starts from weights another library wrote: the gin macro naming the imported MODEL_DIR,
# which the test makes with `shardline convert import` (tests/training/test_interop.py).
IMPORTED = {"vit_ti16_digits_finetune_cpu8": "PRETRAINED"}
# Runs that share a model family run in one test, parents first.
FAMILIES = {family: [e for e in CPU_EXPERIMENTS if e.startswith(family)] for family in
            ("vit22b", "vit_", "limoe", "metnet2", "mgdt")}


def _sizes(experiment, tmp_path):
  """Overrides of sizes only: fewer and shorter Atari episodes in the test's own folder, a smaller radar
  simulation, and a batch that still divides the data-parallel axes."""
  if experiment.startswith("mgdt"):
    return [f"--gin.ATARI_DATA_DIR='{tmp_path / ('atari_' + experiment)}'", "--gin.MAX_STEPS=40",
            "--gin.tasks.atari_episodes.episodes_per_game=2", "--gin.tasks.atari_episodes.validation_every=2",
            "--gin.BATCH_SIZE=16"]
  if experiment.startswith("metnet2"):
    return ["--gin.tasks.precipitation_simulation.num_train=32", "--gin.tasks.precipitation_simulation.num_test=16"]
  return ["--gin.BATCH_SIZE=32"]


def _train_and_eval(gin_file, model_dir, steps, extra):
  flags = [f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{model_dir}'", *extra]
  trained = helpers.run_cli_in_process("train", *flags, f"--gin.train.steps={steps}", "--gin.train.log_every=1",
                                       f"--gin.train.eval_every={steps}", f"--gin.train.checkpoint_every={steps}")
  assert trained.returncode == 0, f"{gin_file}: {trained.stderr[-3000:]}\n{trained.stdout[-2000:]}"
  assert "Training finished" in trained.stdout and f"step {steps} |" in trained.stdout, trained.stdout[-2000:]
  assert os.path.isdir(os.path.join(model_dir, "checkpoints", str(steps)))
  return trained, flags


def test_every_cpu_experiment_is_in_a_family():
  assert sorted(e for members in FAMILIES.values() for e in members) == CPU_EXPERIMENTS


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_cpu_experiment_trains_and_evaluates_through_the_cli(family, tmp_path):
  assert FAMILIES[family], family
  runs = {}
  for experiment in sorted(FAMILIES[family], key=lambda e: e in PARENTS):  # parents first
    extra = _sizes(experiment, tmp_path)
    if experiment in PARENTS:
      parent, macro = PARENTS[experiment]
      extra.append(f"--gin.{macro}='{runs[parent]}'")
    if experiment in IMPORTED:
      from tests.training import test_interop  # pylint: disable=g-import-not-at-top
      test_interop.save_random_vit_ti16_import(tmp_path / "imported")
      extra.append(f"--gin.{IMPORTED[experiment]}='{tmp_path / 'imported'}'")
    model_dir = tmp_path / experiment
    _, flags = _train_and_eval(f"experiments/{experiment}.gin", model_dir, 2, extra)
    evaluated = helpers.run_cli_in_process("eval", *flags)
    assert evaluated.returncode == 0, f"{experiment}: {evaluated.stderr[-3000:]}"
    assert f"Evaluated checkpoint step 2 of {model_dir}" in evaluated.stdout, evaluated.stdout[-2000:]
    runs[experiment] = model_dir


@pytest.fixture(scope="module")
def large_data(tmp_path_factory):
  """Small data in the formats the GPU and pod experiments read, and their overrides."""
  root = tmp_path_factory.mktemp("large_data")
  fake_data.write_imagenet(root / "tfds")
  captions = fake_data.write_image_text(root / "tfds", "shardline_tiny_labelled_captions",
                                        sizes={"train": 16, "test": 8}, labelled=True)
  fake_data.write_radar_store(root / "radar.zarr", steps=16, size=48)
  atari = [f"--gin.ATARI_DATA_DIR='{root / 'atari'}'", "--gin.MAX_STEPS=40",
           "--gin.tasks.atari_episodes.episodes_per_game=2", "--gin.tasks.atari_episodes.validation_every=2"]
  return {
      "vit22b_pod_v4": [f"--gin.tasks.tfds_image_classification.data_dir='{root / 'tfds'}'"],
      "vit22b_slice_h100": [],
      "limoe_b16_gpu": [],
      "limoe_h14_pod_v5p": [f"--gin.tasks.tfds_image_text.data_dir='{root / 'tfds'}'",
                            f"--gin.tasks.tfds_image_text.tfds_name='{captions}'",
                            "--gin.tasks.tfds_image_text.label_key='label'",
                            "--gin.limoe.ContrastiveLIMoE.class_names=['a', 'b']"],
      "metnet2_large_gpu": [],
      "metnet2_paper_v3": [f"--gin.tasks.precipitation_zarr.path='{root / 'radar.zarr'}'"],
      "mgdt_200m_gpu": atari,
      "mgdt_200m_pod_v4": atari,
  }


def test_every_large_experiment_has_a_stand_in(large_data):
  assert sorted(large_data) == LARGE_EXPERIMENTS
  assert sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(STANDINS, "*.gin"))) == LARGE_EXPERIMENTS


@pytest.mark.parametrize("experiment", LARGE_EXPERIMENTS)
def test_every_gpu_and_pod_experiment_trains_a_step_through_its_stand_in(experiment, large_data, tmp_path):
  trained, _ = _train_and_eval(os.path.join(STANDINS, f"{experiment}.gin"), tmp_path / "run", 1,
                               large_data[experiment])
  with open(os.path.join(EXPERIMENTS, f"{experiment}.gin")) as f:
    rule_set = next(line.split("'")[1] for line in _included_lines(f.read()) if "rule_set.name" in line)
  assert f"| rules {rule_set} |" in trained.stdout, trained.stdout[-2000:]


def _included_lines(text):
  """The experiment's lines and those of the mesh file it includes (where the rule set is named)."""
  lines = text.splitlines()
  for line in list(lines):
    if line.startswith("include 'mesh/"):
      with open(os.path.join(helpers.REPO, "gin", line.split("'")[1])) as f:
        lines.extend(f.read().splitlines())
  return lines
