"""ViT-22B as an image classifier: the loss, the metrics, and the batch it expects."""
from typing import Any, Dict, Tuple

import gin
import jax
import jax.numpy as jnp
import optax

from shardline.models.common.mixup import mixup
from shardline.models import base
from shardline.models.vit22b.config import ViT22BConfig
from shardline.models.vit22b.model import ViT22B
from shardline.partitioning import axes


@gin.configurable(module="vit22b")
class ImageClassifier(base.BaseModel):
  """Softmax cross-entropy classification of images, with optional label smoothing and mixup in training.

  Args:
    config: the ViT-22B configuration.
    label_smoothing: the share of each target spread evenly over the classes.
    mixup_alpha: above 0, training images and targets are mixed with Beta(alpha, alpha) weights (models/common/mixup.py);
      the training accuracy then counts the dominant (each row's own) label.

  Batches hold 'image' [batch, H, W, C] float32 and 'label' [batch] int32, and for evaluation optionally
  'weight' [batch] (0 for padding).
  """

  def __init__(self, config: ViT22BConfig = gin.REQUIRED, label_smoothing: float = 0.0, mixup_alpha: float = 0.0):
    self.config = config
    self.label_smoothing = label_smoothing
    self.mixup_alpha = mixup_alpha
    self.module = ViT22B(config)

  def batch_spec(self, batch_size: int) -> Dict[str, jax.ShapeDtypeStruct]:
    c = self.config
    return {"image": jax.ShapeDtypeStruct((batch_size, c.image_size, c.image_size, c.channels), jnp.float32),
            "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

  def batch_axes(self) -> Dict[str, Tuple[Any, ...]]:
    return {"image": (axes.BATCH, None, None, None), "label": (axes.BATCH,), "weight": (axes.BATCH,)}

  def transfer_rules(self) -> base.TransferRules:
    """A new class count starts the head from zeros; a new resolution resizes the position embedding."""
    return base.TransferRules(heads=("head_kernel", "head_bias"), position_grids=("pos_embed/embedding",))

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    return self.module.init(rng, batch["image"])["params"]

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    return self.module.apply({"params": params}, images)

  def features(self, params: Any, batch: base.Batch) -> jax.Array:
    """Pre-logit features [batch, width]: the pooled representation the head reads."""
    _, state = self.module.apply({"params": params}, batch["image"], mutable=["intermediates"])
    return state["intermediates"]["pre_logits"][0].astype(jnp.float32)

  def _targets(self, labels: jax.Array) -> jax.Array:
    """[batch] int -> [batch, classes] smoothed one-hot targets."""
    return optax.smooth_labels(jax.nn.one_hot(labels, self.config.num_classes), self.label_smoothing)

  def _metrics(self, logits: jax.Array, labels: jax.Array, weights: jax.Array, targets=None):
    if targets is None:
      targets = self._targets(labels)
    losses = optax.softmax_cross_entropy(logits, targets)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return losses, {"loss": base.mean_metric(losses, weights),
                    "accuracy": base.mean_metric(correct, weights)}

  def class_logits(self, params: Any, batch: base.Batch) -> jax.Array:
    return self.logits(params, batch["image"])

  def logits_loss_and_metrics(self, params: Any, batch: base.Batch, rng: jax.Array):
    images, targets = batch["image"], self._targets(batch["label"])  # ViT-22B uses no dropout: rng is for mixup
    if self.mixup_alpha > 0:
      images, targets = mixup(rng, images, targets, self.mixup_alpha)
    logits = self.logits(params, images)
    weights = jnp.ones(logits.shape[:1], jnp.float32)
    losses, metrics = self._metrics(logits, batch["label"], weights, targets)
    return logits, losses.mean(), metrics

  def loss_and_metrics(self, params: Any, batch: base.Batch, rng: jax.Array):
    _, loss, metrics = self.logits_loss_and_metrics(params, batch, rng)
    return loss, metrics

  def eval_metrics(self, params: Any, batch: base.Batch) -> base.Metrics:
    logits = self.logits(params, batch["image"])
    weights = batch.get("weight", jnp.ones(logits.shape[:1], jnp.float32))
    return self._metrics(logits, batch["label"], weights)[1]
