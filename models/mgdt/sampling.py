"""Optimality-biased inference (MGDT, section "expert action inference").

Instead of a hand-picked target return per game, the predicted return distribution is tilted toward high
returns, P(R) exp(kappa (R - R_low) / (R_high - R_low)), a return is sampled from it (at a temperature), and
the action is sampled conditioned on that return. kappa = 0 leaves the distribution unchanged.

[R_low, R_high] is `support` when given, else every bin. Over all 120 bins the tilt favours returns no episode
reached: a small model gives them tiny but non-zero probabilities (1e-5 each), and exp(30 x 95/120) outweighs
in-range returns by ~1e8, so the action is conditioned on an untrained return embedding. With `support` = the
returns the data hold, the draw stays in "the range it has seen during training" (the paper) and kappa scales
with that range.
"""
from typing import Optional

import jax
import jax.numpy as jnp


def biased_return_logits(return_logits: jax.Array, kappa: float, return_min: int, return_max: int,
                         temperature: float = 1.0, support: Optional[jax.Array] = None) -> jax.Array:
  """[..., bins] logits of P(R)^(1/temperature) exp(kappa x normalised R). With `support` = [low, high]
  (returns, inclusive), R is normalised over it and bins outside it get no mass; without, over
  [return_min, return_max)."""
  values = return_min + jnp.arange(return_logits.shape[-1])  # bin b holds R = return_min + b
  if support is None:
    return return_logits / temperature + kappa * (values - return_min) / (return_max - return_min)
  span = jnp.maximum(support[1] - support[0], 1)
  logits = return_logits / temperature + kappa * (values - support[0]) / span
  return jnp.where((values >= support[0]) & (values <= support[1]), logits, -jnp.inf)


def sample_return(rng, return_logits, kappa, return_min, return_max, temperature=1.0,
                  support: Optional[jax.Array] = None) -> jax.Array:
  """A return bin per row, from the biased distribution (within `support`, when given)."""
  return jax.random.categorical(rng, biased_return_logits(return_logits, kappa, return_min, return_max,
                                                          temperature, support))


def sample_action(rng, action_logits, temperature=1.0) -> jax.Array:
  return jax.random.categorical(rng, action_logits / temperature)
