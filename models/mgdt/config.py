"""The MGDT configuration. gin binds it in gin/models/mgdt/*.gin; size files change dimensions only."""
import dataclasses

import gin

from shardline.models.common import config_checks


@gin.configurable(module="mgdt")
@dataclasses.dataclass(frozen=True)
class MGDTConfig:
  """Tokens, transformer and discretisation.

  Attributes:
    timesteps: K, the timesteps per sequence.
    frame_size, patch_size: 84 x 84 frames cut into 14 x 14 patches: 36 patch tokens per timestep.
    num_actions: the full ALE action set (18).
    return_min, return_max: returns-to-go are integers binned over [return_min, return_max) (120 bins).
    width, depth, num_heads, mlp_dim: the transformer.
    condition_on_actions: True (the paper) embeds each timestep's action; False hides every action token (its
      embedding is zeroed, its position embedding stays) in training, evaluation and play, so the policy cannot
      copy its own action history and reads frames, returns and rewards only.
    dtype: compute dtype.
    attention_impl: 'auto', 'xla', 'pallas' or 'cudnn'; see kernels/attention/api.py. 'auto' runs the Pallas
      flash kernel (block-causal with the patches as each block's prefix) on TPU and GPU, and XLA on CPU.
  """
  EXECUTION_FIELDS = ("dtype", "attention_impl")
  LATER_FIELDS = ("condition_on_actions",)

  timesteps: int = 4
  frame_size: int = 84
  patch_size: int = 14
  num_actions: int = 18
  return_min: int = -20
  return_max: int = 100
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  condition_on_actions: bool = True
  dtype: str = "float32"
  attention_impl: str = "auto"

  def __post_init__(self):
    config_checks.validate("mgdt.MGDTConfig", [
        *config_checks.positive(self, ("timesteps", "frame_size", "patch_size", "num_actions", "width", "depth",
                                       "num_heads", "mlp_dim")),
        (self.return_max > self.return_min, f"return_max={self.return_max} must exceed return_min={self.return_min}"),
        config_checks.divides(self, "patch_size", "frame_size"),
        config_checks.divides(self, "num_heads", "width"),
        *config_checks.execution_choices(self),
    ])

  @property
  def num_patches(self) -> int:
    return (self.frame_size // self.patch_size) ** 2

  @property
  def tokens_per_step(self) -> int:
    """Patches, then the return-to-go, action and reward tokens."""
    return self.num_patches + 3

  @property
  def num_return_bins(self) -> int:
    return self.return_max - self.return_min
