"""The MGDT as a trainable model: return, action and reward prediction; optimality-biased decisions; play."""
from typing import Any, Callable, Dict, Optional, Tuple

import gin
import jax
import jax.numpy as jnp

from shardline.models import base
from shardline.models.mgdt import augment, sampling, tokens
from shardline.models.mgdt.config import MGDTConfig
from shardline.models.mgdt.model import MultiGameDecisionTransformer
from shardline.partitioning import axes
from shardline.core.errors import UserError


@gin.configurable(module="mgdt")
class DecisionTransformerAgent(base.BaseModel):
  """Batches hold 'observations' [B, K, 84, 84] uint8, 'returns_to_go' [B, K], 'actions' [B, K] and 'rewards'
  [B, K] (clipped). The loss is the sum of the return, action and reward cross-entropies.

  Args:
    config: the architecture.
    kappa: the optimality bias for play; return_temperature, action_temperature: sampling temperatures.
    shift_pad: training windows are shifted by up to this many pixels (augment.random_shift); 0 (the paper's
      setting) trains on the frames as they are. Evaluation and play never shift.
    player: plays games with a checkpoint for `shardline infer` (training/evaluation/atari_play.py: @evaluators.play_atari in gin); models
      never import the emulator themselves.
  """

  def __init__(self, config: MGDTConfig = gin.REQUIRED, kappa: float = 10.0, return_temperature: float = 1.0,
               action_temperature: float = 1.0, shift_pad: int = 0, player: Optional[Callable] = None):
    self.config = config
    self.module = MultiGameDecisionTransformer(config)
    self.kappa, self.return_temperature, self.action_temperature = kappa, return_temperature, action_temperature
    if shift_pad < 0:
      raise UserError(f"mgdt.DecisionTransformerAgent: shift_pad={shift_pad} must be 0 (no augmentation) or a "
                      "positive number of pixels.")
    self.shift_pad = shift_pad
    self.player = player

  def batch_spec(self, batch_size: int) -> Dict[str, jax.ShapeDtypeStruct]:
    c = self.config
    k = c.timesteps
    return {"observations": jax.ShapeDtypeStruct((batch_size, k, c.frame_size, c.frame_size), jnp.uint8),
            "returns_to_go": jax.ShapeDtypeStruct((batch_size, k), jnp.float32),
            "actions": jax.ShapeDtypeStruct((batch_size, k), jnp.int32),
            "rewards": jax.ShapeDtypeStruct((batch_size, k), jnp.int32)}

  def batch_axes(self) -> Dict[str, Tuple[Any, ...]]:
    return {"observations": (axes.BATCH, None, None, None), "returns_to_go": (axes.BATCH, None),
            "actions": (axes.BATCH, None), "rewards": (axes.BATCH, None), "game": (axes.BATCH,),
            "weight": (axes.BATCH,)}

  def _inputs(self, batch):
    c = self.config
    return (batch["observations"], tokens.return_to_bin(batch["returns_to_go"], c.return_min, c.return_max),
            batch["actions"], tokens.reward_to_token(batch["rewards"]))

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    return self.module.init(rng, *self._inputs(batch))["params"]

  def _losses(self, params, batch):
    inputs = self._inputs(batch)
    out = self.module.apply({"params": params}, *inputs)
    targets = {"return": inputs[1], "action": inputs[2], "reward": inputs[3]}
    nll = {name: -jnp.take_along_axis(jax.nn.log_softmax(out[f"{name}_logits"]), targets[name][..., None],
                                      axis=-1)[..., 0] for name in targets}  # [b, k] each
    correct = {name: (jnp.argmax(out[f"{name}_logits"], -1) == targets[name]).astype(jnp.float32)
               for name in targets}
    return nll, correct

  def loss_and_metrics(self, params, batch, rng):
    if self.shift_pad:
      batch = dict(batch, observations=augment.random_shift(rng, batch["observations"], self.shift_pad))
    nll, correct = self._losses(params, batch)
    one = jnp.ones((), jnp.float32)
    metrics = {f"{name}_loss": (jnp.mean(v), one) for name, v in nll.items()}
    metrics.update({f"{name}_accuracy": (jnp.mean(v), one) for name, v in correct.items()})
    return sum(jnp.mean(v) for v in nll.values()), metrics

  def eval_metrics(self, params, batch) -> base.Metrics:
    nll, correct = self._losses(params, batch)
    weights = batch.get("weight", jnp.ones(batch["actions"].shape[:1], jnp.float32))
    metrics = {f"{name}_loss": base.mean_metric(v.mean(-1), weights) for name, v in nll.items()}
    metrics.update({f"{name}_accuracy": base.mean_metric(v.mean(-1), weights) for name, v in correct.items()})
    return metrics

  def decide(self, params, history: Dict[str, jax.Array], rng: jax.Array, kappa: float,
             return_support: Optional[jax.Array] = None):
    """One optimality-biased decision for the last timestep of `history` ([1, k, ...] arrays; the last
    timestep's return, action and reward are placeholders). `return_support` = [low, high] limits the sampled
    return to that range (sampling.biased_return_logits). Returns (action, return bin, attention weights of
    the last block [heads, L, L] from the action pass)."""
    c = self.config
    return_rng, action_rng = jax.random.split(rng)
    inputs = (history["observations"], history["return_bins"], history["actions"], history["reward_tokens"])
    out = self.module.apply({"params": params}, *inputs)
    return_bin = sampling.sample_return(return_rng, out["return_logits"][:, -1], kappa, c.return_min,
                                        c.return_max, self.return_temperature, return_support)
    return_bins = history["return_bins"].at[:, -1].set(return_bin)
    out, state = self.module.apply({"params": params}, inputs[0], return_bins, inputs[2], inputs[3],
                                   mutable=["intermediates"])
    action = sampling.sample_action(action_rng, out["action_logits"][:, -1], self.action_temperature)
    weights = state["intermediates"][f"block_{c.depth - 1}"]["attn"]["attention_weights"][0][0]
    return action[0], return_bin[0], weights

  def analyze(self, params, batches, output_dir: str) -> Dict[str, Any]:
    """Plays the configured games in the emulator (see `player`)."""
    del batches
    if self.player is None:
      raise NotImplementedError("Set mgdt.DecisionTransformerAgent.player (e.g. @evaluators.play_atari) to play.")
    return self.player(self, params, output_dir)
