"""The MetNet-2 network: encoder, lead-time-conditioned dilated-convolution aggregator, decoder and bin head.

  radar [B, T, C, C] (mm/h) + state [B, S, C, C] + lead index [B]
    -> log1p(radar) and state stacked as channels, a 3x3 conv, space-to-depth by `downsample` and a 1x1 conv
    -> residual blocks of dilated 3x3 convs (dilations 1, 2, 4, ... max, repeated), each FiLM-conditioned on the
       lead time
    -> 1x1 conv, depth-to-space back to full resolution plus a 1x1 skip from the full-resolution encoder
       features (fine detail for short lead times), crop to the central target window
    -> logits over precipitation-rate bins [B, target, target, bins].
Activations carry the logical axes (batch, height, width, channels); under the `spatial` rule set height and width
are split over the mesh and XLA exchanges the convolution halos between neighbouring devices.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.models.common import params as params_lib
from shardline.models.common.norms import LayerNorm
from shardline.models.metnet2.config import MetNet2Config
from shardline.partitioning import axes
from shardline.partitioning.context import constrain

ACTIVATION = (axes.BATCH, axes.HEIGHT, axes.WIDTH, None)


class Conv(nn.Module):
  """A bias-carrying 2-D convolution over NHWC with SAME padding and an optional dilation."""
  features: int
  kernel: int = 3
  dilation: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = params_lib.param(self, "kernel", params_lib.lecun_normal(),
                         (self.kernel, self.kernel, x.shape[-1], self.features),
                         (axes.KERNEL, axes.KERNEL, axes.CONV_IN, axes.CHANNELS))
    b = params_lib.param(self, "bias", params_lib.zeros(), (self.features,), (axes.CHANNELS,))
    # [b, h, w, c] * [k, k, c, f] -> [b, h, w, f]
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (1, 1), "SAME",
                                     rhs_dilation=(self.dilation, self.dilation),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b.astype(self.dtype)


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
  """[b, h, w, c] -> [b, h/f, w/f, f*f*c]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // factor, factor, w // factor, factor, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
  """[b, h, w, f*f*c] -> [b, h*f, w*f, c]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, factor, factor, c // (factor * factor))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, c // (factor * factor))


class DilatedBlock(nn.Module):
  """x + Conv1x1(FiLM(gelu(DilatedConv3x3(LN(x))))), FiLM's scale and shift given per example."""
  width: int
  dilation: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, lead_embedding: jax.Array) -> jax.Array:
    h = LayerNorm(use_bias=True, feature_axis=axes.CHANNELS, dtype=self.dtype, name="norm")(x)
    h = nn.gelu(Conv(self.width, 3, self.dilation, self.dtype, name="dilated")(h))
    film = nn.Dense(2 * self.width, dtype=jnp.float32, name="film",
                    kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED, axes.CHANNELS)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.CHANNELS,)))(lead_embedding)
    scale, shift = jnp.split(film, 2, axis=-1)  # [b, width] each; zero-initialised: identity FiLM at first
    h = h * (1 + scale[:, None, None, :].astype(h.dtype)) + shift[:, None, None, :].astype(h.dtype)
    return constrain(x + Conv(self.width, 1, dtype=self.dtype, name="project")(h), ACTIVATION)


class MetNet2(nn.Module):
  """(radar [B, T, C, C], state [B, S, C, C], lead index [B]) -> bin logits [B, target, target, bins]."""
  config: MetNet2Config

  @nn.compact
  def __call__(self, radar: jax.Array, state: jax.Array, lead_index: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = params_lib.dtype_of(cfg.dtype)
    x = jnp.concatenate([jnp.log1p(jnp.maximum(radar, 0.0)), state], axis=1).transpose(0, 2, 3, 1)  # NHWC
    x = constrain(x, ACTIVATION)
    x = nn.gelu(Conv(cfg.width, 3, dtype=dtype, name="encoder_conv")(x))
    full_resolution = x
    x = constrain(space_to_depth(x, cfg.downsample), ACTIVATION)
    x = constrain(Conv(cfg.width, 1, dtype=dtype, name="encoder_project")(x), ACTIVATION)

    table = params_lib.param(self, "lead_embedding", nn.initializers.normal(1.0),
                             (len(cfg.lead_times), cfg.width), (None, axes.EMBED))
    lead = nn.gelu(nn.Dense(cfg.width, name="lead_mlp", kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (axes.EMBED, axes.EMBED)))(table[lead_index]))  # [b, width]
    for i, dilation in enumerate(cfg.dilations):
      x = DilatedBlock(cfg.width, dilation, dtype, name=f"block_{i}")(x, lead)

    x = Conv(cfg.width * cfg.downsample ** 2, 1, dtype=dtype, name="decoder_project")(x)
    x = depth_to_space(x, cfg.downsample) + Conv(cfg.width, 1, dtype=dtype, name="skip")(full_resolution)
    x = constrain(x, ACTIVATION)
    margin = (cfg.context - cfg.target) // 2
    x = x[:, margin:margin + cfg.target, margin:margin + cfg.target]
    x = LayerNorm(use_bias=True, feature_axis=axes.CHANNELS, dtype=dtype, name="head_norm")(x)
    logits = Conv(cfg.num_bins, 1, dtype=dtype, name="head")(x)
    return constrain(logits.astype(jnp.float32), ACTIVATION)
