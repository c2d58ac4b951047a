"""MetNet-2 as a trainable model: cross-entropy over rate bins at a sampled lead time; CRPS and threshold skill
by lead time for the model and the baselines; a table and a PNG panel for `shardline eval`."""
import os
from typing import Any, Dict, Tuple

import gin
import jax
import jax.numpy as jnp
import numpy as np

from shardline.models import base
from shardline.models.metnet2 import baselines, bins, report
from shardline.models.metnet2.config import MetNet2Config
from shardline.models.metnet2.model import MetNet2
from shardline.partitioning import axes

THRESHOLDS = (0.2, 1.0, 2.0)  # mm/h
FORECASTS = ("metnet2", "persistence", "advection", "climatology")


@gin.configurable(module="metnet2")
class PrecipitationForecaster(base.BaseModel):
  """MetNet-2 on batches of 'radar' [B, T, C, C], 'state' [B, S, C, C] and 'target' [B, leads, t, t] (mm/h).

  Training samples one lead time per example (as MetNet-2 does) and scores its bin distribution by
  cross-entropy; evaluation runs every lead time.

  Args:
    config: the architecture and the output bins.
    minutes_per_frame: for labelling lead times in tables and figures.
  """

  def __init__(self, config: MetNet2Config = gin.REQUIRED, minutes_per_frame: float = 10.0):
    self.config = config
    self.module = MetNet2(config)
    self.minutes_per_frame = minutes_per_frame

  def batch_spec(self, batch_size: int) -> Dict[str, jax.ShapeDtypeStruct]:
    c = self.config
    return {"radar": jax.ShapeDtypeStruct((batch_size, c.input_frames, c.context, c.context), jnp.float32),
            "state": jax.ShapeDtypeStruct((batch_size, c.state_channels, c.context, c.context), jnp.float32),
            "target": jax.ShapeDtypeStruct((batch_size, len(c.lead_times), c.target, c.target), jnp.float32)}

  def batch_axes(self) -> Dict[str, Tuple[Any, ...]]:
    spatial = (axes.BATCH, None, axes.HEIGHT, axes.WIDTH)
    return {"radar": spatial, "state": spatial, "target": spatial, "weight": (axes.BATCH,)}

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    lead = jnp.zeros(batch["radar"].shape[:1], jnp.int32)
    return self.module.init(rng, batch["radar"], batch["state"], lead)["params"]

  def logits(self, params, batch, lead_index: jax.Array) -> jax.Array:
    """[B, target, target, bins] for a [B] vector of lead indices."""
    return self.module.apply({"params": params}, batch["radar"], batch["state"], lead_index)

  def loss_and_metrics(self, params, batch, rng):
    c = self.config
    b = batch["radar"].shape[0]
    lead_index = jax.random.randint(rng, (b,), 0, len(c.lead_times))
    target = jnp.take_along_axis(batch["target"], lead_index[:, None, None, None], axis=1)[:, 0]
    log_probs = jax.nn.log_softmax(self.logits(params, batch, lead_index))
    labels = bins.to_bins(target, c.num_bins, c.bin_width)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    one = jnp.ones((), jnp.float32)
    crps = bins.crps(jnp.exp(log_probs), target, c.bin_width)
    return jnp.mean(nll), {"cross_entropy": (jnp.mean(nll), one), "crps": (jnp.mean(crps), one)}

  def lead_label(self, lead: int) -> str:
    return f"{lead * self.minutes_per_frame:g}min"

  def forecasts(self, params, batch, index: int) -> Dict[str, jax.Array]:
    """Every forecast of lead `index`: MetNet-2's bin probabilities [B, t, t, bins], the deterministic
    baselines [B, t, t] and climatology's bin probabilities [B, bins]."""
    c = self.config
    lead_index = jnp.full(batch["radar"].shape[:1], index, jnp.int32)
    return {"metnet2": jax.nn.softmax(self.logits(params, batch, lead_index)),
            "persistence": baselines.persistence(batch["radar"], c.target),
            "advection": baselines.advection(batch["radar"], c.lead_times[index], c.target),
            "climatology": baselines.climatology(batch["radar"], c.num_bins, c.bin_width)}

  def eval_metrics(self, params, batch) -> base.Metrics:
    """Per lead time and forecast: CRPS, and per threshold CSI (as hits / (hits + misses + false alarms),
    so that sums over batches stay exact) and the Brier score. Probabilistic forecasts forecast an event where
    its probability is at least one half."""
    c = self.config
    weights = batch.get("weight", jnp.ones(batch["radar"].shape[:1], jnp.float32))
    pixels = weights[:, None, None] * jnp.ones((1, c.target, c.target))
    metrics = {}
    for index, lead in enumerate(c.lead_times):
      observed = batch["target"][:, index]
      for name, forecast in self.forecasts(params, batch, index).items():
        if name == "metnet2":
          crps = bins.crps(forecast, observed, c.bin_width)
          chance = {t: bins.exceedance(forecast, t, c.bin_width) for t in THRESHOLDS}
        elif name == "climatology":
          crps = bins.crps(jnp.broadcast_to(forecast[:, None, None], observed.shape + forecast.shape[-1:]),
                           observed, c.bin_width)
          chance = {t: jnp.broadcast_to(bins.exceedance(forecast, t, c.bin_width)[:, None, None], observed.shape)
                    for t in THRESHOLDS}
        else:
          crps = bins.point_crps(forecast, observed, c.num_bins, c.bin_width)
          chance = {t: (forecast >= t).astype(jnp.float32) for t in THRESHOLDS}
        key = f"{self.lead_label(lead)}/{name}"
        metrics[f"crps/{key}"] = base.mean_metric(crps, pixels)
        for t in THRESHOLDS:
          event, predicted = observed >= t, chance[t] >= 0.5
          hits = jnp.sum((event & predicted) * pixels)
          union = jnp.sum((event | predicted) * pixels)
          metrics[f"csi{t:g}/{key}"] = (hits, union)
          metrics[f"brier{t:g}/{key}"] = base.mean_metric((chance[t] - event) ** 2, pixels)
    return metrics

  def headline(self, metrics: Dict[str, float]) -> Dict[str, float]:
    """The CRPS of each forecast averaged over lead times, for one-line logs."""
    return {f"crps_{name}": float(np.mean([v for k, v in metrics.items()
                                           if k.startswith("crps/") and k.endswith("/" + name)]))
            for name in FORECASTS}

  def eval_report(self, params, batch, metrics: Dict[str, float], output_dir: str) -> Dict[str, Any]:
    """Prints the table by lead time and writes the forecast panel PNG for one example of `batch`."""
    c = self.config
    labels = [self.lead_label(lead) for lead in c.lead_times]
    print(report.table(metrics, labels, FORECASTS, THRESHOLDS))
    forecast_fn = jax.jit(self.forecasts, static_argnums=2)
    rows, blocks = [], {}
    for index, label in enumerate(labels):
      f = jax.device_get(forecast_fn(params, batch, index))
      chance = np.asarray(bins.exceedance(f["metnet2"], 1.0, c.bin_width))  # [B, t, t]
      blocks[label] = report.block_ratio(chance, c.downsample)
      rows.append({"truth": np.asarray(batch["target"][0, index]), "chance": chance[0],
                   "advection": np.asarray(f["advection"][0])})
    path = os.path.join(output_dir, "metnet2_forecasts.png")
    report.panel(rows, labels, path)
    print(f"Forecast panel: {path}")
    print(f"Decoder blocks ({c.downsample}x{c.downsample}): change of P(rate >= 1 mm/h) across block boundaries / "
          "within blocks, by lead (1 = no block structure): "
          + ", ".join(f"{label} {ratio:.2f}" for label, ratio in blocks.items()))
    return {"figure": path, "block_ratio": blocks}
