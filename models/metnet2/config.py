"""The MetNet-2 configuration. gin binds it in gin/models/metnet2/*.gin; size files change dimensions only."""
import dataclasses
from typing import Tuple

import gin

from shardline.models.common import config_checks


@gin.configurable(module="metnet2")
@dataclasses.dataclass(frozen=True)
class MetNet2Config:
  """Geometry, architecture and output bins.

  Attributes:
    context, target: sides (pixels) of the input window and of the central window forecast.
    input_frames: radar frames per example; state_channels: weather-model state channels.
    lead_times: the lead times (in frames) the model is conditioned on; one embedding each.
    width: channels of the context aggregator.
    downsample: space-to-depth factor of the encoder (MetNet-2 works at a quarter of the input resolution).
    max_dilation: dilations run 1, 2, 4, ... up to this; `repeats` times over.
    num_bins, bin_width: the output distribution: bins of bin_width mm/h from 0; the last bin takes all above.
    dtype: compute dtype.
    upsample: how the decoder returns to full resolution: 'bilinear' (interpolate the coarse features, then add
      the full-resolution skip; gin/models/metnet2/base.gin's choice) or 'depth_to_space' (a 1x1 conv to
      downsample**2 x width channels rearranged into pixels: the earlier decoder, whose f x f sub-pixels are
      separate channels and leave a visible 2x2 checkerboard in the probability maps).
  """
  EXECUTION_FIELDS = ("dtype",)
  LATER_FIELDS = ("upsample",)
  UPSAMPLE = ("depth_to_space", "bilinear")

  context: int = 64
  target: int = 32
  input_frames: int = 4
  state_channels: int = 6
  lead_times: Tuple[int, ...] = (1, 3, 6, 12)
  width: int = 32
  downsample: int = 2
  max_dilation: int = 8
  repeats: int = 2
  num_bins: int = 64
  bin_width: float = 0.2
  dtype: str = "float32"
  upsample: str = "depth_to_space"

  def __post_init__(self):
    checks = [
        *config_checks.positive(self, ("context", "target", "input_frames", "width", "downsample", "repeats",
                                       "num_bins", "bin_width")),
        (self.state_channels >= 0, f"state_channels={self.state_channels} must not be negative"),
        (min(self.lead_times, default=1) > 0, f"lead_times={self.lead_times} must be positive"),
        *config_checks.execution_choices(self),
        config_checks.divides(self, "downsample", "context"),
        ((self.context - self.target) % 2 == 0 and self.target <= self.context,
         f"target={self.target} must fit centred in context={self.context}"),
        (self.max_dilation >= 1 and self.max_dilation & (self.max_dilation - 1) == 0,
         f"max_dilation={self.max_dilation} must be a power of two"),
        (len(self.lead_times) >= 1, "lead_times must name at least one lead time"),
        config_checks.one_of(self, "upsample", self.UPSAMPLE),
    ]
    config_checks.validate("metnet2.MetNet2Config", checks)

  @property
  def dilations(self) -> Tuple[int, ...]:
    """The dilation of every aggregator block, in order."""
    one = tuple(2 ** i for i in range(self.max_dilation.bit_length()))
    return one * self.repeats

  @property
  def receptive_field(self) -> int:
    """Side (input pixels) of the window that one output pixel sees: a 3x3 encoder conv at full resolution,
    space-to-depth, the dilated 3x3 convs at 1/downsample resolution, then 1x1 convs and the upsampling (bilinear
    interpolation also reads the neighbouring coarse cell on one side)."""
    coarse = 1 + 2 * sum(self.dilations) + (1 if self.upsample == "bilinear" else 0)
    return self.downsample * coarse + 2
