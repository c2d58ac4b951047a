"""LIMoE as a trainable model: contrastive image-text training with the router losses, zero-shot evaluation."""
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin
import jax
import jax.numpy as jnp

from shardline.models import base
from shardline.models.limoe import analysis, losses, text
from shardline.models.limoe.config import LIMoEConfig
from shardline.models.limoe.model import LIMoE
from shardline.partitioning import axes
from shardline.core.errors import UserError

AUX_NAMES = ("importance", "load", "local_entropy", "global_entropy", "z_loss")


def _aux_losses(stats: List[Dict[str, jax.Array]], config: LIMoEConfig, threshold: float) -> Dict[str, jax.Array]:
  """Each auxiliary loss summed over the MoE layers of one modality's pass."""
  totals = {name: jnp.zeros((), jnp.float32) for name in AUX_NAMES}
  for s in stats:
    p, v = s["probs"], s["valid"]
    totals["importance"] += losses.importance_loss(p, v)
    totals["load"] += losses.load_loss(s["logits"], s["noisy_logits"], v, config.top_k, config.router_noise_std)
    totals["local_entropy"] += losses.local_entropy_loss(p, v)
    totals["global_entropy"] += losses.global_entropy_loss(p, v, threshold)
    totals["z_loss"] += losses.z_loss(s["logits"], v)
  return totals


def _success(stats: List[Dict[str, jax.Array]]) -> Tuple[jax.Array, jax.Array]:
  """(kept first choices, valid tokens) over all MoE layers: the routing success rate as a (sum, weight) pair."""
  if not stats:
    return jnp.zeros(()), jnp.zeros(())
  return sum(jnp.sum(s["kept"] * s["valid"]) for s in stats), sum(jnp.sum(s["valid"]) for s in stats)


@gin.configurable(module="limoe")
class ContrastiveLIMoE(base.BaseModel):
  """Contrastive LIMoE. Batches hold 'image' [B, H, W, C] float32, 'text' [B, L] byte ids and 'label' [B].

  Args:
    config: the architecture.
    class_names, templates: zero-shot prompts; class i is the mean embedding of its templates filled with
      class_names[i] (prompt ensembling, as in CLIP). None (as `shardline plan` binds it) leaves the model
      without zero-shot evaluation; training needs no class names.
    aux: the auxiliary-loss weights (losses.aux_weights).
  """

  def __init__(self, config: LIMoEConfig = gin.REQUIRED, class_names: Optional[Sequence[str]] = gin.REQUIRED,
               templates: Sequence[str] = ("a photo of the digit {}",), aux: Dict[str, float] = None):
    self.config = config
    self.module = LIMoE(config)
    self.class_names, self.templates = tuple(class_names or ()), tuple(templates)
    self.aux = aux if aux is not None else losses.aux_weights()
    for name, weight in self.aux.items():
      if name != "global_entropy_threshold" and weight < 0:
        raise UserError(f"limoe.aux_weights.{name} = {weight}; auxiliary-loss weights must be >= 0.")
    threshold = self.aux["global_entropy_threshold"]
    self.threshold = math.log(config.num_experts) / 2 if threshold is None else threshold
    self.prompts = text.encode_all([t.format(c) for c in self.class_names for t in self.templates],
                                   config.text_length) if self.class_names else None

  def batch_spec(self, batch_size: int) -> Dict[str, jax.ShapeDtypeStruct]:
    c = self.config
    return {"image": jax.ShapeDtypeStruct((batch_size, c.image_size, c.image_size, c.channels), jnp.float32),
            "text": jax.ShapeDtypeStruct((batch_size, c.text_length), jnp.int32)}

  def batch_axes(self) -> Dict[str, Tuple[Any, ...]]:
    return {"image": (axes.BATCH, None, None, None), "text": (axes.BATCH, None), "label": (axes.BATCH,),
            "weight": (axes.BATCH,)}

  def transfer_rules(self) -> base.TransferRules:
    """Sparse upcycling: from a dense checkpoint (limoe.LIMoEConfig.dense = True), every expert of a MoE layer
    starts as a copy of the MLP it replaces, and its router starts fresh."""
    return base.TransferRules(expert_stacks=((r"(block_\d+)/moe/(wi|bi|wo|bo)", r"\1/mlp/\2"),),
                              fresh_when_absent=(r"block_\d+/moe/router",))

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    return self.module.init({"params": rng, "router": rng}, batch["image"], batch["text"])["params"]

  def loss_and_metrics(self, params, batch, rng):
    image_emb, text_emb, log_t, image_stats, text_stats = self.module.apply(
        {"params": params}, batch["image"], batch["text"], deterministic=False, rngs={"router": rng})
    contrastive, accuracy = losses.contrastive_loss(image_emb, text_emb, log_t)
    one = jnp.ones((), jnp.float32)
    metrics = {"contrastive_loss": (contrastive, one), "retrieval_accuracy": (accuracy, one),
               "temperature": (jnp.exp(log_t), one)}
    total = contrastive
    for modality, stats in (("image", image_stats), ("text", text_stats)):
      for name, value in _aux_losses(stats, self.config, self.threshold).items():
        total = total + self.aux[name] * value
        metrics[f"{name}_{modality}"] = (value, one)
      metrics[f"routing_success_{modality}"] = _success(stats)
    return total, metrics

  def class_embeddings(self, params) -> jax.Array:
    """[classes, D]: each class's prompts embedded, averaged over templates, renormalised."""
    if not self.class_names:
      raise UserError("Zero-shot evaluation of LIMoE needs the class names of the evaluation set: set "
                      "limoe.ContrastiveLIMoE.class_names in your gin files.")
    emb, _ = self.module.apply({"params": params}, jnp.asarray(self.prompts), method=LIMoE.encode_texts)
    emb = emb.reshape(len(self.class_names), len(self.templates), -1).mean(axis=1)
    return emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)

  def eval_metrics(self, params, batch) -> base.Metrics:
    """Zero-shot classification: each image takes the class whose prompt embedding is nearest."""
    image_emb, _ = self.module.apply({"params": params}, batch["image"], method=LIMoE.encode_images)
    predictions = jnp.argmax(image_emb @ self.class_embeddings(params).T, axis=-1)
    weights = batch.get("weight", jnp.ones(predictions.shape, jnp.float32))
    correct = (predictions == batch["label"]).astype(jnp.float32)
    return {"zero_shot_accuracy": base.mean_metric(correct, weights)}

  def analyze(self, params, batches, output_dir: str) -> Dict[str, Any]:
    """Expert specialisation by modality (PNG and table), routing success rates, and zero-shot accuracy."""
    routing_fn = jax.jit(self.routing_arrays)
    eval_fn = jax.jit(self.eval_metrics)
    totals, correct, seen = {}, 0.0, 0.0
    for batch in batches:
      analysis.accumulate(totals, jax.device_get(routing_fn(params, batch)), self.config.num_experts)
      accuracy, weight = jax.device_get(eval_fn(params, batch)["zero_shot_accuracy"])
      correct, seen = correct + float(accuracy), seen + float(weight)
    summary = analysis.summarize(totals)
    blocks = self.config.moe_layer_set
    path = os.path.join(output_dir, "limoe_expert_modalities.png")
    analysis.plot(summary, path, blocks)
    print(analysis.table(summary, blocks))
    print(f"zero-shot accuracy {100 * correct / max(seen, 1):.2f}% on {int(seen)} images; figure: {path}")
    return {"zero_shot_accuracy": correct / max(seen, 1), "figure": path, **summary}

  def routing_arrays(self, params, batch):
    """Per modality, per MoE layer: first-choice expert, kept and valid flags (device arrays)."""
    _, _, _, image_stats, text_stats = self.module.apply({"params": params}, batch["image"], batch["text"])
    keep = ("expert", "kept", "valid")
    return {"image": [{k: s[k] for k in keep} for s in image_stats],
            "text": [{k: s[k] for k in keep} for s in text_stats]}
