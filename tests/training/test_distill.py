"""Distillation: the loss against a hand computation, a student distilled from a teacher checkpoint on the same
mesh (the teacher is not saved with it), and the teacher checks."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.launch import gin_config
from shardline.launch import plan_inputs
from shardline.models import base
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training.lifecycle import checkpoints
from shardline.training.transfer import distill
from shardline.training.state import run_setup as setup
from tests import helpers

# One worker runs this module, so its module-scoped run is made once (pytest-xdist's loadgroup).
pytestmark = pytest.mark.xdist_group("distill")

TEACHER_STEPS = 4
DISTILL = "experiments/vit22b_small_digits_distill_cpu8.gin"


class FixedLogits(base.BaseModel):
  """A classifier whose logits are its parameters (a test double): [batch, classes]."""
  batch_spec = batch_axes = init = eval_metrics = None

  def class_logits(self, params, batch):
    return params

  def logits_loss_and_metrics(self, params, batch, rng):
    return params, jnp.float32(0.5), {"accuracy": (jnp.float32(1.0), jnp.float32(1.0))}

  def loss_and_metrics(self, params, batch, rng):
    raise AssertionError("distillation uses logits_loss_and_metrics")


def test_loss_is_the_weighted_sum_of_label_loss_and_temperature_scaled_kl():
  student_logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], np.float32)
  teacher_logits = np.array([[0.0, 2.0, -2.0], [-1.0, 3.0, 0.0]], np.float32)
  spec = distill.Distill(teacher=FixedLogits(), path="unused", temperature=2.0, weight=0.75)
  loss, metrics = spec.loss_and_metrics(FixedLogits(), student_logits, teacher_logits, {}, None)

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  p, q = softmax(teacher_logits / 2.0), softmax(student_logits / 2.0)
  kl = (p * np.log(p / q)).sum(-1).mean()
  np.testing.assert_allclose(loss, 0.25 * 0.5 + 0.75 * 4.0 * kl, rtol=1e-6)
  np.testing.assert_allclose(metrics["distill_kl"][0], kl, rtol=1e-6)
  assert float(metrics["teacher_agreement"][0]) == 0.5  # the top classes differ in row 0 and agree in row 1
  assert float(metrics["label_loss"][0]) == 0.5 and "accuracy" in metrics
  grads = jax.grad(lambda s: spec.loss_and_metrics(FixedLogits(), s, teacher_logits, {}, None)[0])(
      student_logits)
  assert np.all(np.isfinite(grads)) and np.any(grads)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A checkpoint of the demo's model (ViT-22B tiny for digits), as initialised, at step TEACHER_STEPS."""
  model_dir = tmp_path_factory.mktemp("teacher") / "run"
  helpers.save_initial_checkpoint("experiments/vit22b_tiny_digits_cpu8.gin", model_dir, TEACHER_STEPS, 128)
  return model_dir


def _student_args(model_dir, teacher_dir, steps, *extra):
  return ("train", f"--gin_file={DISTILL}", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TEACHER='{teacher_dir}'",
          f"--gin.train.steps={steps}", "--gin.train.log_every=1", f"--gin.train.eval_every={steps}",
          f"--gin.train.checkpoint_every={steps}", *extra)


@pytest.mark.full
def test_student_trains_against_the_teacher_and_saves_only_itself(tmp_path, teacher):
  model_dir = tmp_path / "student"
  result = helpers.run_cli_in_process(*_student_args(model_dir, teacher, 3))
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f"Distilling from ImageClassifier at {teacher}/checkpoints step {TEACHER_STEPS} (temperature 2, "
          "distillation weight 0.75)") in result.stdout
  assert "distill_kl" in result.stdout and "teacher_agreement" in result.stdout
  assert "step 3 | eval_accuracy" in result.stdout
  saved = checkpoints.Checkpointer(str(model_dir), read_only=True).state_metadata(3)
  taught = checkpoints.Checkpointer(str(teacher), read_only=True).state_metadata(TEACHER_STEPS)
  assert set(saved) == set(taught)  # step, params, opt_state, rng, skipped: nothing added for the teacher
  shapes = lambda tree: {k: m.shape for k, m in jax.tree_util.tree_flatten_with_path(
      tree["params"], is_leaf=lambda x: hasattr(x, "shape"))[0]}
  student, teacher_shapes = shapes(saved), shapes(taught)
  assert student.keys() == teacher_shapes.keys()  # the same parameters, at the student's size only
  assert saved["params"]["encoder"]["layers"]["query"].shape == (2, 32, 2, 16)  # [depth, width, heads, head_dim]
  assert taught["params"]["encoder"]["layers"]["query"].shape == (4, 64, 4, 16)


def test_teacher_problems_stop_before_anything_is_written(tmp_path, teacher):
  model_dir = tmp_path / "student"
  classes = helpers.run_cli_in_process(*_student_args(model_dir, teacher, 2, "--gin.NUM_CLASSES=12"))
  assert classes.returncode == 2 and "The teacher predicts 10 classes and the student 12" in classes.stderr
  assert "Traceback" not in classes.stderr and not model_dir.exists()

  gin_config.parse([DISTILL], [f"TEACHER='{teacher}'", "MODEL_DIR='unused'"])
  inputs = plan_inputs.plan_run()
  run = setup.build(inputs.model, total_steps=10, global_batch=inputs.batch_size)
  assert distill.prepare(inputs.distill, run).step == TEACHER_STEPS
  with pytest.raises(UserError, match="distill.path: there is no committed checkpoint"):
    distill.prepare(dataclasses.replace(inputs.distill, path=str(tmp_path / "nothing")), run)
  shallower = ImageClassifier(dataclasses.replace(inputs.distill.teacher.config, depth=2))
  with pytest.raises(UserError, match="depth: checkpoint=4, distill.teacher=2"):
    distill.prepare(dataclasses.replace(inputs.distill, teacher=shallower), run)
  mixing = dataclasses.replace(run, model=ImageClassifier(run.model.config, mixup_alpha=0.2))
  with pytest.raises(UserError, match="Set the student's mixup_alpha to 0 when distilling"):
    distill.prepare(inputs.distill, mixing)
