"""Images to patch tokens and back, the patch embedding, and learned position embeddings."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.partitioning import axes


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[batch, H, W, C] -> [batch, (H/p)*(W/p), p*p*C], patches in row-major order."""
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"Image size {h}x{w} is not divisible by the patch size {patch}.")
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [b, gh, gw, p, p, c]
  return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: jax.Array, patch: int, height: int, width: int, channels: int) -> jax.Array:
  """The inverse of `patchify`: [batch, n, p*p*C] -> [batch, H, W, C]."""
  b = tokens.shape[0]
  gh, gw = height // patch, width // patch
  x = tokens.reshape(b, gh, gw, patch, patch, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [b, gh, p, gw, p, c]
  return x.reshape(b, height, width, channels)


class PatchEmbed(nn.Module):
  """Linear embedding of flattened patches (a stride-p convolution written as one einsum)."""
  patch_size: int
  width: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    patches = patchify(images, self.patch_size).astype(self.dtype)
    kernel = params_lib.param(self, "kernel", params_lib.lecun_normal(), (patches.shape[-1], self.width),
                              (axes.PATCH, axes.EMBED))
    bias = params_lib.param(self, "bias", params_lib.zeros(), (self.width,), (axes.EMBED,))
    # [b, n, p*p*c] x [p*p*c, e] -> [b, n, e]
    return jnp.einsum("bnp,pe->bne", patches, kernel.astype(self.dtype)) + bias.astype(self.dtype)


class PositionEmbedding(nn.Module):
  """A learned position embedding added to the tokens."""
  stddev: float = 0.02

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    table = params_lib.param(self, "embedding", nn.initializers.normal(self.stddev), x.shape[-2:],
                             (axes.POSITION, axes.EMBED))
    return x + table.astype(x.dtype)[None]
