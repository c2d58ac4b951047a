"""The LIMoE tower: one transformer for image patches and text tokens, with MoE layers in the blocks config names.

Each modality has its own embedding (patches, or bytes) and positions, and its own final projection into the
shared embedding space; everything between is shared. Images and texts go through the tower separately, so
routing statistics come per modality.
"""
from typing import Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.models.common.attention import SelfAttention
from shardline.models.common.mlp import Mlp
from shardline.models.common.norms import LayerNorm
from shardline.models.common.patching import PatchEmbed, PositionEmbedding
from shardline.models.limoe.config import LIMoEConfig
from shardline.models.limoe.moe import MoeMlp
from shardline.partitioning import axes
from shardline.partitioning.context import constrain

RESIDUAL = (axes.BATCH, axes.LENGTH, axes.EMBED)


class Block(nn.Module):
  """Pre-LayerNorm block: attention, then an MLP or a MoE layer."""
  config: LIMoEConfig
  moe: bool

  @nn.compact
  def __call__(self, x, valid, deterministic):
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    x = constrain(x, RESIDUAL)
    y = LayerNorm(use_bias=True, dtype=dtype, name="attn_norm")(x)
    x = x + SelfAttention(cfg.num_heads, cfg.head_dim, implementation=cfg.attention_impl, dtype=dtype,
                          name="attn")(y, segment_ids=valid.astype(jnp.int32))
    y = LayerNorm(use_bias=True, dtype=dtype, name="mlp_norm")(x)
    stats = None
    if self.moe:
      out, stats = MoeMlp(cfg, dtype=dtype, name="moe")(y, valid, deterministic)
    else:
      out = Mlp(cfg.mlp_dim, dtype=dtype, name="mlp")(y)
    return constrain(x + out, RESIDUAL), stats


class LIMoE(nn.Module):
  """images [B, H, W, C] and texts [B, L] (byte ids) -> normalised embeddings, temperature, routing stats."""
  config: LIMoEConfig

  def setup(self):
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width, dtype=dtype)
    self.image_pos = PositionEmbedding()
    self.token_embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (axes.VOCAB, axes.EMBED)), dtype=dtype)
    self.text_pos = PositionEmbedding()
    moe = set(cfg.moe_layer_set)
    self.blocks = [Block(cfg, moe=i in moe, name=f"block_{i}") for i in range(cfg.depth)]
    self.final_norm = LayerNorm(use_bias=True, dtype=dtype)
    init = params_lib.lecun_normal()
    self.image_proj = self.param("image_proj", nn.with_logical_partitioning(init, (axes.EMBED, None)),
                                 (cfg.width, cfg.embed_dim))
    self.text_proj = self.param("text_proj", nn.with_logical_partitioning(init, (axes.EMBED, None)),
                                (cfg.width, cfg.embed_dim))
    # CLIP's initial temperature, 1/0.07, kept as a log so it stays positive.
    self.log_temperature = self.param("log_temperature", nn.initializers.constant(jnp.log(1 / 0.07)), ())

  def _tower(self, x, valid, deterministic) -> Tuple[jax.Array, List[Dict[str, jax.Array]]]:
    stats = []
    for block in self.blocks:
      x, s = block(x, valid, deterministic)
      if s is not None:
        stats.append(s)
    return self.final_norm(x), stats

  @staticmethod
  def _pool(x, valid, projection):
    weights = valid.astype(x.dtype)[..., None]
    pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)  # mean over real tokens
    emb = pooled.astype(jnp.float32) @ projection
    return emb / jnp.linalg.norm(emb, axis=-1, keepdims=True).clip(1e-6)

  def encode_images(self, images, deterministic: bool = True):
    x = self.image_pos(self.patch_embed(images))
    valid = jnp.ones(x.shape[:2], bool)
    x, stats = self._tower(x, valid, deterministic)
    return self._pool(x, valid, self.image_proj), stats

  def encode_texts(self, tokens, deterministic: bool = True):
    x = self.text_pos(self.token_embed(tokens))
    valid = tokens != 0
    x, stats = self._tower(x, valid, deterministic)
    return self._pool(x, valid, self.text_proj), stats

  def __call__(self, images, tokens, deterministic: bool = True):
    image_emb, image_stats = self.encode_images(images, deterministic)
    text_emb, text_stats = self.encode_texts(tokens, deterministic)
    return image_emb, text_emb, self.log_temperature, image_stats, text_stats
