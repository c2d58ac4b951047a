"""Tokenisation of MGDT timesteps: frames to patches, returns to bins, rewards to {-1, 0, +1}, and the mask.

Per timestep the sequence holds 36 patch tokens, then the return-to-go token, the action token and the reward
token. The attention mask is block-causal over timesteps, with the patches of one frame visible to each other
and the three scalar tokens causal among themselves: a token sees every token of earlier timesteps, the
patches of its own timestep, and the scalar tokens of its own timestep up to itself. So the return is read out
at the last patch (it sees the frame, not its return), the action at the return token, the reward at the
action token.
"""
import jax.numpy as jnp
import numpy as np

from shardline.kernels.attention import reference as attention_reference

RETURN_OFFSET, ACTION_OFFSET, REWARD_OFFSET = 0, 1, 2  # after the patches


def patchify(frames, patch: int):
  """[..., H, W] -> [..., (H/p) * (W/p), p * p], row-major patches."""
  *lead, h, w = frames.shape
  x = frames.reshape(*lead, h // patch, patch, w // patch, patch)
  x = jnp.moveaxis(x, -3, -2) if isinstance(x, jnp.ndarray) else np.moveaxis(x, -3, -2)
  return x.reshape(*lead, (h // patch) * (w // patch), patch * patch)


def unpatchify(patches, patch: int, size: int):
  """The inverse of patchify: [..., N, p * p] -> [..., size, size]."""
  *lead, _, _ = patches.shape
  n = size // patch
  x = patches.reshape(*lead, n, n, patch, patch)
  x = jnp.moveaxis(x, -2, -3) if isinstance(x, jnp.ndarray) else np.moveaxis(x, -2, -3)
  return x.reshape(*lead, size, size)


def return_to_bin(returns, return_min: int, return_max: int):
  """Integer returns-to-go -> bin ids in [0, return_max - return_min)."""
  return jnp.clip(jnp.floor(returns) - return_min, 0, return_max - return_min - 1).astype(jnp.int32)


def bin_to_return(bins, return_min: int):
  return bins + return_min


def reward_to_token(rewards):
  """Rewards -> {0, 1, 2} for {-1, 0, +1} (clipped first)."""
  return (jnp.sign(rewards) + 1).astype(jnp.int32)


def mask_arguments(num_patches: int) -> dict:
  """The MGDT mask as kernels/attention arguments: block-causal with one timestep (num_patches + 3 tokens) per
  block and the patches as each block's bidirectional prefix."""
  return dict(mask_kind="block_causal", block_size=num_patches + 3, block_prefix=num_patches)


def attention_mask(timesteps: int, num_patches: int) -> np.ndarray:
  """[L, L] boolean, True where query i may attend key j (L = timesteps x (num_patches + 3)), as the model's
  attention applies it."""
  length = timesteps * (num_patches + 3)
  mask = mask_arguments(num_patches)
  return np.asarray(attention_reference.make_mask(length, length, mask["mask_kind"], mask["block_size"],
                                                  block_prefix=mask["block_prefix"]))[0, 0]
