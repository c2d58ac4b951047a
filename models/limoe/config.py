"""The LIMoE configuration. gin binds it in gin/models/limoe/*.gin; size files change dimensions only."""
import dataclasses
from typing import Tuple

import gin

from shardline.kernels.moe import api as moe_api
from shardline.models.common import config_checks

DISPATCH = ("einsum", "grouped")


@gin.configurable(module="limoe")
@dataclasses.dataclass(frozen=True)
class LIMoEConfig:
  """The one-tower MoE transformer and its routing.

  Attributes:
    image_size, channels, patch_size: image geometry.
    vocab_size, text_length: byte-level text (0 is padding, 1 end of text, bytes at +3; see text.py).
    width, depth, mlp_dim, num_heads, head_dim: the transformer.
    embed_dim: the shared image-text embedding space.
    num_experts, top_k: experts per MoE layer and experts per token (LIMoE: 1).
    moe_layers: indices of the blocks whose MLP is a MoE layer; empty means every other block of the second
      half, LIMoE's default.
    capacity_factor: expert capacity = ceil(capacity_factor x tokens per group x top_k / experts).
    group_size: tokens per routing group (capacity is per group); 0 means one sequence per group.
    batch_priority_routing: fill capacity in descending order of router confidence (BPR) instead of token order.
    router_noise_std: std of the noise added to router logits in training (the V-MoE load loss needs it).
    dispatch: 'einsum' (GShard one-hot dispatch/combine) or 'grouped' (sort by expert, grouped matmul kernel).
    grouped_impl: the grouped matmul (kernels/moe/api.py): 'pallas' (the Pallas kernel), 'xla' (an einsum over
      every capacity slot), 'ragged' (jax.lax.ragged_dot over the filled rows), or 'auto', the implementation
      measured fastest on the platform compiled for (kernels/moe/api.AUTO, which keeps 'pallas' on GPU and TPU
      until a run there measures the others).
    dense: build the compute-matched dense baseline (every MoE layer becomes a plain MLP).
    attention_impl, dtype: execution choices.
  """
  EXECUTION_FIELDS = ("dtype", "attention_impl", "dispatch", "grouped_impl")

  image_size: int = 224
  channels: int = 3
  patch_size: int = 16
  vocab_size: int = 259
  text_length: int = 16
  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  head_dim: int = 64
  embed_dim: int = 512
  num_experts: int = 8
  top_k: int = 1
  moe_layers: Tuple[int, ...] = ()
  capacity_factor: float = 1.0
  group_size: int = 0
  batch_priority_routing: bool = True
  router_noise_std: float = 0.0
  dispatch: str = "einsum"
  grouped_impl: str = "auto"
  dense: bool = False
  attention_impl: str = "auto"
  dtype: str = "float32"

  def __post_init__(self):
    config_checks.validate("limoe.LIMoEConfig", [
        *config_checks.positive(self, ("image_size", "channels", "patch_size", "vocab_size", "text_length", "width",
                                       "depth", "mlp_dim", "num_heads", "head_dim", "embed_dim", "num_experts",
                                       "capacity_factor")),
        (1 <= self.top_k <= self.num_experts, f"top_k={self.top_k} must be between 1 and num_experts"),
        config_checks.one_of(self, "dispatch", DISPATCH),
        config_checks.one_of(self, "grouped_impl", moe_api.IMPLEMENTATIONS),
        *config_checks.execution_choices(self),
        config_checks.divides(self, "patch_size", "image_size"),
        (self.group_size >= 0, f"group_size={self.group_size} must be 0 (one sequence per group) or positive"),
        (all(0 <= i < self.depth for i in self.moe_layers), f"moe_layers {self.moe_layers} must be in 0..depth-1"),
    ])

  @property
  def moe_layer_set(self) -> Tuple[int, ...]:
    """The MoE blocks; by default every other block of the second half (0-based: the last one included)."""
    if self.dense:
      return ()
    if self.moe_layers:
      return tuple(self.moe_layers)
    return tuple(range(self.depth - 1, self.depth // 2 - 1, -2))[::-1]

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2
