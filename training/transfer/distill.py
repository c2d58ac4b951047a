"""Distillation (`train.distill = @distill()`): a frozen teacher's softened class probabilities train the student.

The teacher is any shardline classifier and a checkpoint of it. Its parameters are restored onto the student's
mesh (sharded by the same rules), passed to every train step as an input, and never differentiated, updated or
saved: the student's checkpoints hold the student alone. Teacher and student see the same batch, so any data
augmentation gives both the same view. The loss (Hinton et al., 2015) is

  (1 - weight) * label loss + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)),

where the T^2 keeps the soft targets' gradients on the scale of the label loss's as the temperature T changes.
"""
import dataclasses
from typing import Any, Optional, Tuple

import gin
import jax
import jax.numpy as jnp
import optax

from shardline.core.errors import UserError
from shardline.models.base import Batch, BaseModel, Metrics
from shardline.partitioning.context import use_partitioner
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.state import run_setup as setup_lib
from shardline.training.state import train_state


@gin.configurable("distill", module="transfer")
@dataclasses.dataclass(frozen=True)
class Distill:
  """A teacher to distil from.

  Attributes:
    teacher: the teacher model (any shardline classifier; gin: a scoped model, e.g. @teacher/vit22b.ImageClassifier()).
    path: the teacher run's MODEL_DIR (a local folder, gs:// or s3://), or its checkpoints/ folder.
    step: the teacher's checkpoint step; None takes the latest.
    temperature: T, dividing both models' logits before the softmax.
    weight: the share of the distillation term in the loss; the label loss has 1 - weight.
  """
  teacher: BaseModel = gin.REQUIRED
  path: str = gin.REQUIRED
  step: Optional[int] = None
  temperature: float = 1.0
  weight: float = 1.0

  def loss_and_metrics(self, student: BaseModel, params: Any, teacher_params: Any, batch: Batch,
                       rng: jax.Array) -> Tuple[jax.Array, Metrics]:
    """The student's distillation loss and metrics (its own, plus the KL term and agreement with the teacher)."""
    logits, label_loss, metrics = student.logits_loss_and_metrics(params, batch, rng)  # logits: [batch, classes]
    teacher_logits = jax.lax.stop_gradient(self.teacher.class_logits(teacher_params, batch))  # [batch, classes]
    t = self.temperature
    teacher_log_probs = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
    student_log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
    kl = (jnp.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs)).sum(-1)  # [batch]
    distill_loss = t * t * kl.mean()
    agree = (jnp.argmax(logits, -1) == jnp.argmax(teacher_logits, -1)).astype(jnp.float32)
    one = jnp.ones((), jnp.float32)
    metrics = dict(metrics, label_loss=(label_loss.astype(jnp.float32), one),
                   distill_kl=(kl.mean(), one), teacher_agreement=(agree.mean(), one))
    return (1 - self.weight) * label_loss + self.weight * distill_loss, metrics


@dataclasses.dataclass
class Teacher:
  """A checked teacher: its checkpoint, and its parameters' abstract shapes and shardings on the run's mesh."""
  spec: Distill
  checkpointer: checkpoints_lib.Checkpointer
  step: int
  abstract_params: Any
  params_sharding: Any

  def load(self) -> Any:
    """The teacher's parameters, read straight into their shardings (the optimizer state is not read)."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          self.abstract_params, self.params_sharding)
    return self.checkpointer.restore_parts(self.step, {"params": target})["params"]

  def describe(self) -> str:
    """One log line naming the teacher."""
    return (f"Distilling from {type(self.spec.teacher).__name__} at {self.checkpointer.directory} step {self.step} "
            f"(temperature {self.spec.temperature:g}, distillation weight {self.spec.weight:g}); the teacher is "
            "frozen and is not saved with the student.")


def _classes(model: BaseModel, params: Any, batch_spec, partitioner) -> int:
  with use_partitioner(partitioner):
    logits = jax.eval_shape(model.class_logits, params, batch_spec)
  return int(logits.shape[-1])


def _check_settings(spec: Distill) -> None:
  if not isinstance(spec.teacher, BaseModel):
    raise UserError(f"distill.teacher = {spec.teacher!r} is not a shardline model; bind it to one, e.g. "
                    "distill.teacher = @teacher/vit22b.ImageClassifier() with teacher/vit22b.ImageClassifier.config "
                    "set to the teacher's configuration.")
  if not spec.temperature > 0:
    raise UserError(f"distill.temperature = {spec.temperature}; it must be positive.")
  if not 0 <= spec.weight <= 1:
    raise UserError(f"distill.weight = {spec.weight}; it is the distillation share of the loss, in [0, 1].")


def layout(spec: Distill, run: setup_lib.RunSetup) -> Tuple[Any, Any]:
  """The teacher's abstract parameters and their shardings on the run's mesh (no checkpoint is read); a UserError
  when its settings are wrong or its classes are not the student's."""
  _check_settings(spec)
  if getattr(run.model, "mixup_alpha", 0) > 0:
    raise UserError(f"The student mixes its training images (mixup_alpha = {run.model.mixup_alpha}), but the "
                    "teacher would see them unmixed, so their class probabilities would describe different "
                    "images. Set the student's mixup_alpha to 0 when distilling.")
  batch_spec = run.model.batch_spec(1)
  abstract, sharding, _ = train_state.abstract_state(spec.teacher, optax.set_to_zero(), batch_spec,
                                                     run.partitioner)
  student_classes = _classes(run.model, run.abstract_state.params, batch_spec, run.partitioner)
  teacher_classes = _classes(spec.teacher, abstract.params, batch_spec, run.partitioner)
  if student_classes != teacher_classes:
    raise UserError(f"The teacher predicts {teacher_classes} classes and the student {student_classes}; "
                    "distillation matches their class probabilities one to one, so both must share the label "
                    "space. Distil from a teacher trained on the student's classes, or fine-tune the teacher's "
                    "head to them first (train.init_from).")
  return abstract.params, sharding.params


def prepare(spec: Distill, run: setup_lib.RunSetup) -> Teacher:
  """Finds and checks the teacher's checkpoint; a UserError says what is wrong before anything is read or written."""
  abstract_params, params_sharding = layout(spec, run)
  checkpointer = checkpoints_lib.of_run(spec.path, "distill.path")
  steps = checkpointer.all_steps()
  if not steps:
    raise UserError(f"distill.path: there is no committed checkpoint in {checkpointer.directory}. Give the "
                    "MODEL_DIR of the teacher's training run (a folder holding checkpoints/<step>/).")
  step = steps[-1] if spec.step is None else spec.step
  if step not in steps:
    raise UserError(f"distill.step = {step}, but {checkpointer.directory} holds steps "
                    f"{', '.join(map(str, steps))}. Choose one of them, or None for the latest.")
  diff = checkpoints_lib.fingerprint_diff(checkpointer.read_meta(step).get("fingerprint") or {},
                                          spec.teacher.fingerprint())
  if diff:
    shown = "; ".join(f"{k}: checkpoint={a!r}, distill.teacher={b!r}" for k, (a, b) in list(diff.items())[:8])
    raise UserError(f"The teacher checkpoint {checkpointer.directory} step {step} was written by another model "
                    f"configuration than distill.teacher: {shown}. Configure distill.teacher as the teacher was "
                    "trained (the teacher run's model gin file, under a scope).")
  return Teacher(spec, checkpointer, step, abstract_params, params_sharding)

