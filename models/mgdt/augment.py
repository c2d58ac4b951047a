"""Random-shift augmentation of training frames (Kostrikov et al., 2020, "Image Augmentation Is All You Need").

Each window is padded by `pad` pixels (edges repeated) and cropped back at a random offset; every frame of a
window moves by the same offset, so motion between timesteps is kept. A small dataset of a few hundred
episodes is memorised frame by frame within a few epochs; the shift makes exact frames useless to memorise.
"""
import jax
import jax.numpy as jnp


def random_shift(rng: jax.Array, observations: jax.Array, pad: int) -> jax.Array:
  """observations [B, K, H, W] -> [B, K, H, W], each window shifted by up to `pad` pixels either way."""
  if pad <= 0:
    return observations
  b, k, h, w = observations.shape
  padded = jnp.pad(observations, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")  # [b, k, h+2p, w+2p]
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * pad + 1)  # [b, 2]: rows, columns

  def crop(window, offset):  # [k, h+2p, w+2p] -> [k, h, w]
    return jax.lax.dynamic_slice(window, (0, offset[0], offset[1]), (k, h, w))

  return jax.vmap(crop)(padded, offsets)
