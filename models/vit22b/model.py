"""The ViT-22B network: patch embedding, learned positions, a stack of blocks, and a pooling head.

With head='token' a learned class token is prepended after the position embedding (as big_vision's 'tok' pool
does): the position table covers the square patch grid only, so `init_from` resizes it for a new resolution with
the same rule as for the other heads. A checkpoint whose class token had a position of its own (timm, Hugging
Face) folds it into the token on import (training/transfer/interop/).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import heads
from shardline.models.common import params as params_lib
from shardline.models.common.norms import LayerNorm
from shardline.models.common.patching import PatchEmbed, PositionEmbedding
from shardline.models.vit22b.block import RESIDUAL_AXES, Block
from shardline.models.vit22b.config import ViT22BConfig
from shardline.partitioning import axes
from shardline.partitioning.context import constrain, scan_unroll

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _block_class(config: ViT22BConfig):
  """The Block, rematerialised as configured."""
  if config.remat_policy == "none":
    return Block
  return nn.remat(Block, policy=_REMAT_POLICIES[config.remat_policy], prevent_cse=not config.scan_layers)


class Encoder(nn.Module):
  """`depth` blocks, scanned or unrolled."""
  config: ViT22BConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    block = _block_class(cfg)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=cfg.depth,
                      metadata_params={nn.PARTITION_NAME: axes.LAYERS}, unroll=scan_unroll(cfg.depth))
      x, _ = stack(cfg, name="layers")(x, None)
    else:
      for i in range(cfg.depth):
        x, _ = block(cfg, name=f"block_{i}")(x, None)
    return x


class ViT22B(nn.Module):
  """Images [batch, H, W, C] -> logits [batch, num_classes]."""
  config: ViT22BConfig

  def embed(self, images: jax.Array) -> jax.Array:
    """Images -> final token representations [batch, tokens, width] (the class token first, with head='token')."""
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    x = PatchEmbed(cfg.patch_size, cfg.width, dtype=dtype, name="patch_embed")(images)
    x = PositionEmbedding(name="pos_embed")(x)
    if cfg.head == "token":
      token = params_lib.param(self, "cls", nn.initializers.zeros, (1, 1, cfg.width), (None, None, axes.EMBED))
      # [b, n, e] -> [b, 1 + n, e]: the class token first, as the libraries whose weights are imported put it.
      x = jnp.concatenate([jnp.broadcast_to(token.astype(x.dtype), (x.shape[0], 1, cfg.width)), x], axis=1)
    x = constrain(x, RESIDUAL_AXES)
    x = Encoder(cfg, name="encoder")(x)
    return LayerNorm(use_bias=cfg.layernorm_bias, feature_axis=axes.EMBED, epsilon=cfg.layernorm_epsilon,
                     dtype=dtype, name="encoder_norm")(x)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    x = self.embed(images)
    if cfg.head == "map":
      pooled = heads.MapHead(cfg.num_heads, cfg.mlp_dim, dtype=dtype, name="map_head")(x)
    elif cfg.head == "token":
      pooled = x[:, 0]
    else:
      pooled = heads.global_average_pool(x)
    self.sow("intermediates", "pre_logits", pooled)  # [b, e]; kept only when asked for (few-shot features)
    kernel = params_lib.param(self, "head_kernel", nn.initializers.zeros, (cfg.width, cfg.num_classes),
                              (axes.EMBED, axes.CLASSES))
    bias = params_lib.param(self, "head_bias", nn.initializers.zeros, (cfg.num_classes,), (axes.CLASSES,))
    # [b, e] x [e, c] -> [b, c]
    return (jnp.einsum("be,ec->bc", pooled, kernel.astype(dtype)) + bias.astype(dtype)).astype(jnp.float32)
