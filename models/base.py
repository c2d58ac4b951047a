"""The interface between a model and the trainer.

A `BaseModel` wraps a flax module with everything the trainer needs and nothing it should not know: how to
build an abstract batch, how to initialise, the loss, and the evaluation metrics. Metrics are returned as
(sum, weight) pairs so that averages over devices, batches and steps are exact.
"""
import abc
import dataclasses
from typing import Any, Dict, Mapping, Tuple

import jax

from shardline.core.errors import UserError

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, Tuple[jax.Array, jax.Array]]  # name -> (sum, weight)


@dataclasses.dataclass(frozen=True)
class TransferRules:
  """How a checkpoint of another configuration of a model maps onto this one (`train.init_from`).

  Attributes:
    heads: regexes (full match) of parameters that start from zeros when their shape differs from the
      checkpoint's (classifier heads when the number of classes changes).
    position_grids: regexes of [tokens, width] position embeddings over a square patch grid, resized bilinearly
      when the grid differs (a new image resolution).
    expert_stacks: (regex, replacement) pairs for sparse upcycling: a parameter [experts, ...] that the
      checkpoint lacks and that matches a regex starts as a copy, in every expert, of the dense checkpoint
      parameter `re.sub(regex, replacement, name)` (a MoE layer's experts from the dense MLP it replaces).
    fresh_when_absent: regexes of parameters that start as initialised when the checkpoint lacks them (a MoE
      layer's router, upcycled from a dense checkpoint).
  """
  heads: Tuple[str, ...] = ()
  position_grids: Tuple[str, ...] = ()
  expert_stacks: Tuple[Tuple[str, str], ...] = ()
  fresh_when_absent: Tuple[str, ...] = ()


class BaseModel(abc.ABC):
  """A trainable model: a flax module plus its loss and metrics."""

  @abc.abstractmethod
  def batch_spec(self, batch_size: int) -> Dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one training batch, by feature name."""

  @abc.abstractmethod
  def batch_axes(self) -> Dict[str, Tuple[Any, ...]]:
    """Logical axes of each batch feature (the leading one is `batch`)."""

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> Any:
    """Initial (boxed) parameters for a batch of this spec."""

  @abc.abstractmethod
  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array) -> Tuple[jax.Array, Metrics]:
    """The scalar training loss and metrics for one batch."""

  @abc.abstractmethod
  def eval_metrics(self, params: Any, batch: Batch) -> Metrics:
    """Evaluation metrics for one batch; honours an optional per-example 'weight' feature (padding = 0)."""

  def transfer_rules(self) -> TransferRules:
    """Which parameters may change shape when fine-tuning from another configuration; none by default."""
    return TransferRules()

  def class_logits(self, params: Any, batch: Batch) -> jax.Array:
    """Class logits [batch, classes] of an evaluation batch (a distillation teacher's predictions)."""
    raise UserError(f"{type(self).__name__} predicts no class logits, so it cannot be a distillation teacher; "
                    "distillation (train.distill) needs classifiers (ViT-22B).")

  def logits_loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array) -> Tuple[jax.Array, jax.Array,
                                                                                       Metrics]:
    """Class logits [batch, classes], the label loss and the metrics of one training forward pass (a distillation
    student's)."""
    raise UserError(f"{type(self).__name__} predicts no class logits, so it cannot be distilled into; "
                    "distillation (train.distill) needs classifiers (ViT-22B).")

  def features(self, params: Any, batch: Batch) -> jax.Array:
    """Pre-logit features [batch, features] of an evaluation batch, for few-shot evaluation."""
    raise UserError(f"{type(self).__name__} has no pre-logit features, so it cannot be evaluated few-shot; "
                    "few-shot evaluation needs an image classifier (ViT-22B).")

  def headline(self, metrics: Dict[str, float]) -> Dict[str, float]:
    """The evaluation metrics worth a place in one-line logs (all of them unless a model has many)."""
    return metrics

  def eval_report(self, params: Any, batch: Batch, metrics: Dict[str, float], output_dir: str) -> Dict[str, Any]:
    """Extra output of `shardline eval` (tables, figures) from the metrics and one evaluation batch."""
    del params, batch, metrics, output_dir
    return {}

  def analyze(self, params: Any, batches, output_dir: str) -> Dict[str, Any]:
    """Model-specific analysis for `shardline infer` (plots, tables), over evaluation batches."""
    raise NotImplementedError(f"{type(self).__name__} has no analysis for `shardline infer`.")

  def fingerprint(self) -> Dict[str, Any]:
    """What identifies this model's parameters, stored with checkpoints to catch mismatched restores.

    Config fields named in the config's EXECUTION_FIELDS (implementations, dtypes, remat) change how a step
    runs but not the parameters, so a run may switch them and still resume. Fields named in LATER_FIELDS were
    added after checkpoints existed, with a default that gives the earlier model; they enter the fingerprint
    only when set to something else, so those checkpoints still restore.
    """
    config = getattr(self, "config", None)
    if not dataclasses.is_dataclass(config):
      return {"model": type(self).__name__, "config": repr(config)}
    skip = set(getattr(config, "EXECUTION_FIELDS", ()))
    skip |= {f.name for f in dataclasses.fields(config)
             if f.name in getattr(config, "LATER_FIELDS", ()) and getattr(config, f.name) == f.default}
    return {"model": type(self).__name__,
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}}


def mean_metric(values: jax.Array, weights: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """A (sum, weight) pair from per-example values and weights."""
  return (values * weights).sum(), weights.sum()
