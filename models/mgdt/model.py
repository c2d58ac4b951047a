"""The MGDT network: timestep tokens, a game-agnostic transformer with the MGDT mask, and three heads.

  observations [B, K, 84, 84] uint8, return bins [B, K], actions [B, K], reward tokens [B, K]
    -> per timestep: 36 patch embeddings (linear on 14 x 14 pixels), return, action and reward embeddings (the
       action's zeroed when config.condition_on_actions is False)
    -> + position-within-timestep and timestep embeddings -> pre-LayerNorm transformer blocks, attention under
       the MGDT mask (tokens.mask_arguments): the attention kernels' block-causal mask with one timestep per
       block and the patches as its bidirectional prefix (the weights are sown for plots)
    -> return logits [B, K, 120] read at the last patch, action logits [B, K, 18] at the return token, reward
       logits [B, K, 3] at the action token.
"""
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.models.common.attention import SelfAttention
from shardline.models.common.mlp import Mlp
from shardline.models.common.norms import LayerNorm
from shardline.models.mgdt import tokens
from shardline.models.mgdt.config import MGDTConfig
from shardline.partitioning import axes
from shardline.partitioning.context import constrain

RESIDUAL = (axes.BATCH, axes.LENGTH, axes.EMBED)


class Block(nn.Module):
  """Pre-LayerNorm transformer block; attention under the MGDT mask (the weights are sown for plots)."""
  config: MGDTConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    x = constrain(x, RESIDUAL)
    attention = SelfAttention(cfg.num_heads, cfg.width // cfg.num_heads, use_bias=False,
                              implementation=cfg.attention_impl, dtype=dtype, name="attn",
                              **tokens.mask_arguments(cfg.num_patches))
    x = x + attention(LayerNorm(use_bias=True, dtype=dtype, name="attn_norm")(x))
    x = x + Mlp(cfg.mlp_dim, dtype=dtype, name="mlp")(LayerNorm(use_bias=True, dtype=dtype, name="mlp_norm")(x))
    return constrain(x, RESIDUAL)


class MultiGameDecisionTransformer(nn.Module):
  """See the module docstring."""
  config: MGDTConfig

  @nn.compact
  def __call__(self, observations, return_bins, actions, reward_tokens) -> Dict[str, jax.Array]:
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    b, k = actions.shape
    n, e = cfg.num_patches, cfg.width
    embed = lambda name, count: params_lib.param(self, name, nn.initializers.normal(0.02), (count, e),
                                                 (None, axes.EMBED))
    pixels = tokens.patchify(observations.astype(jnp.float32) / 255.0, cfg.patch_size)  # [b, k, n, p*p]
    patch_w = params_lib.param(self, "patch_embed", params_lib.lecun_normal(), (pixels.shape[-1], e),
                               (axes.PATCH, axes.EMBED))
    patch_tokens = jnp.einsum("bknp,pe->bkne", pixels.astype(dtype), patch_w.astype(dtype))
    action_tokens = embed("action_embed", cfg.num_actions)[actions]  # [b, k, e]
    if not cfg.condition_on_actions:
      action_tokens = jnp.zeros_like(action_tokens)
    scalars = jnp.stack([embed("return_embed", cfg.num_return_bins)[return_bins], action_tokens,
                         embed("reward_embed", 3)[reward_tokens]], axis=2).astype(dtype)  # [b, k, 3, e]
    x = jnp.concatenate([patch_tokens, scalars], axis=2)  # [b, k, n + 3, e]
    x = x + embed("position_embed", cfg.tokens_per_step)[None, None].astype(dtype)
    x = x + embed("timestep_embed", cfg.timesteps)[None, :k, None].astype(dtype)
    x = x.reshape(b, k * cfg.tokens_per_step, e)
    for i in range(cfg.depth):
      x = Block(cfg, name=f"block_{i}")(x)
    x = LayerNorm(use_bias=True, dtype=dtype, name="final_norm")(x).reshape(b, k, cfg.tokens_per_step, e)
    head = lambda name, count, at: nn.Dense(count, dtype=jnp.float32, name=name, kernel_init=(
        nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED, None))))(x[:, :, at].astype(jnp.float32))
    return {"return_logits": head("return_head", cfg.num_return_bins, n - 1),
            "action_logits": head("action_head", cfg.num_actions, n + tokens.RETURN_OFFSET),
            "reward_logits": head("reward_head", 3, n + tokens.ACTION_OFFSET)}
