"""Mixup, the batch-level augmentation of big_vision's ViT recipes, applied on the devices inside the train step.

Each example is mixed with its neighbour in the global batch (the row before it, cyclically) with one weight per
step: lam ~ Beta(alpha, alpha), folded to max(lam, 1 - lam) so each row's own example dominates. The random key
is the train step's (the run's seed folded with the step, kept in the checkpoint), so a resumed or elastic run
mixes identically: the weight depends on (seed, step) only, and the neighbour is a row of the global batch,
whatever the number of processes. With gradient accumulation each microbatch is mixed on its own, with its own
key (training/state/microbatches.py).
"""
from typing import Tuple

import jax
import jax.numpy as jnp


def mixup(rng: jax.Array, images: jax.Array, targets: jax.Array, alpha: float) -> Tuple[jax.Array, jax.Array]:
  """images [B, H, W, C] and soft targets [B, K] -> the same, each row mixed with row (i - 1) mod B.

  Args:
    rng: the step's key.
    images: float images.
    targets: one-hot or smoothed label distributions.
    alpha: the Beta distribution's concentration (big_vision's ImageNet recipes use 0.2 to 0.5).
  """
  lam = jax.random.beta(rng, alpha, alpha)
  lam = jnp.maximum(lam, 1.0 - lam)
  mix = lambda x: (lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0)).astype(x.dtype)  # [B, ...]
  return mix(images), mix(targets)
