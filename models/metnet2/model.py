"""The MetNet-2 network: encoder, lead-time-conditioned dilated-convolution aggregator, decoder and bin head.

  radar [B, T, C, C] (mm/h) + state [B, S, C, C] + lead index [B]
    -> log1p(radar) and state stacked as channels, a 3x3 conv, space-to-depth by `downsample` and a 1x1 conv
    -> residual blocks of dilated 3x3 convs (dilations 1, 2, 4, ... max, repeated), each FiLM-conditioned on the
       lead time
    -> 1x1 conv, back to full resolution (bilinear interpolation, or the earlier depth-to-space) plus a 1x1 skip
       from the full-resolution encoder features (fine detail for short lead times), crop to the central target
       window
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


def _bilinear_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
  """Bilinear upsampling of one axis by an integer factor (half-pixel centres, edges clamped), as
  jax.image.resize(..., 'linear') computes it: output pixel f*m + r lies at m + delta_r in input coordinates, with
  |delta_r| < 1/2, so it mixes cell m with one neighbour. Shifted copies rather than resize's dense [out, in]
  interpolation matrix: under the spatial rules a shift exchanges a one-row halo between devices, where a dense
  matrix over a sharded axis would gather the whole axis."""
  n = x.shape[axis]
  padded = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), x,
                            jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
  before = jax.lax.slice_in_dim(padded, 0, n, axis=axis)  # cell m - 1 (clamped)
  after = jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis)  # cell m + 1 (clamped)
  phases = []
  for r in range(factor):
    delta = (r + 0.5) / factor - 0.5
    neighbour = before if delta < 0 else after
    phases.append((1 - abs(delta)) * x + abs(delta) * neighbour)
  stacked = jnp.stack(phases, axis=axis + 1)  # [..., n, factor, ...]
  return stacked.reshape(x.shape[:axis] + (n * factor,) + x.shape[axis + 1:])


def bilinear_upsample(x: jax.Array, factor: int) -> jax.Array:
  """[b, h, w, c] -> [b, h*f, w*f, c], bilinearly interpolated."""
  return _bilinear_axis(_bilinear_axis(x, factor, 1), factor, 2)


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

    if cfg.upsample == "bilinear":
      x = bilinear_upsample(Conv(cfg.width, 1, dtype=dtype, name="decoder_project")(x), cfg.downsample)
    else:
      x = depth_to_space(Conv(cfg.width * cfg.downsample ** 2, 1, dtype=dtype, name="decoder_project")(x),
                         cfg.downsample)
    x = constrain(x, ACTIVATION) + Conv(cfg.width, 1, dtype=dtype, name="skip")(full_resolution)
    x = constrain(x, ACTIVATION)
    margin = (cfg.context - cfg.target) // 2
    x = x[:, margin:margin + cfg.target, margin:margin + cfg.target]
    x = LayerNorm(use_bias=True, feature_axis=axes.CHANNELS, dtype=dtype, name="head_norm")(x)
    logits = Conv(cfg.num_bins, 1, dtype=dtype, name="head")(x)
    return constrain(logits.astype(jnp.float32), ACTIVATION)
