"""Optimality-biased inference (MGDT, section "expert action inference").

Instead of a hand-picked target return per game, the predicted return distribution is tilted toward high
returns, P(R) exp(kappa (R - R_min) / (R_max - R_min)), a return is sampled from it (at a temperature), and
the action is sampled conditioned on that return. kappa = 0 leaves the distribution unchanged.
"""
import jax
import jax.numpy as jnp


def biased_return_logits(return_logits: jax.Array, kappa: float, return_min: int, return_max: int,
                         temperature: float = 1.0) -> jax.Array:
  """[..., bins] logits of P(R)^(1/temperature) exp(kappa x normalised R)."""
  bins = return_logits.shape[-1]
  normalised = jnp.arange(bins) / (return_max - return_min)  # bin b holds R = return_min + b
  return return_logits / temperature + kappa * normalised


def sample_return(rng, return_logits, kappa, return_min, return_max, temperature=1.0) -> jax.Array:
  """A return bin per row, from the biased distribution."""
  return jax.random.categorical(rng, biased_return_logits(return_logits, kappa, return_min, return_max,
                                                          temperature))


def sample_action(rng, action_logits, temperature=1.0) -> jax.Array:
  return jax.random.categorical(rng, action_logits / temperature)
