"""The ViT-22B configuration. gin binds it in gin/models/vit22b/*.gin; size files change dimensions only."""
import dataclasses

import gin

from shardline.models.common import config_checks

LINEAR_IMPLS = ("xla", "async", "pallas")
HEADS = ("map", "gap", "token")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@gin.configurable(module="vit22b")
@dataclasses.dataclass(frozen=True)
class ViT22BConfig:
  """Every architectural choice of ViT-22B, with the paper's values as defaults.

  Attributes:
    num_classes: classifier outputs.
    image_size, channels, patch_size: input geometry; 224 px with patch 14 gives 256 tokens.
    width, depth, mlp_dim, num_heads, head_dim: the transformer's dimensions.
    head: 'map' (multihead attention pooling), 'gap' (global average pooling) or 'token' (a learned class token
      prepended to the patches, without a position of its own, whose final representation is pooled: the
      classic ViT's, as timm, Hugging Face and big_vision's pool_type='tok' build it).
    parallel_block: y = x + MLP(LN(x)) + Attn(LN(x)) when True; the standard sequential block when False.
    qk_norm: LayerNorm on queries and keys before their dot product.
    qkv_bias, layernorm_bias: ViT-22B has neither.
    out_bias, mlp_bias: biases of the attention output projection and of the MLP (the paper keeps them).
    layernorm_epsilon: the variance floor of every LayerNorm of the encoder (1e-6 as big_vision and timm; Hugging
      Face's ViT uses 1e-12).
    gelu_approximate: the MLP's GELU in its tanh approximation (big_vision, flax) or exact with erf (timm,
      Hugging Face); imported weights reproduce their library's logits only with its own choice.
    dtype: compute dtype, 'float32' or 'bfloat16'; parameters stay float32.
    linear_impl: 'xla' (plain sharded einsums) or 'async' (collective matmuls that overlap communication);
      'async' fuses the parallel block's projections and needs the fsdp_tensor rules; 'pallas' is 'async'
      with the all-gather-matmul forward as the Pallas TPU kernel (TPU; interpreted elsewhere, for tests).
      The sequential block always uses 'xla'.
    async_bidirectional: with 'async', send half of every block each way round the ring.
    attention_impl: 'auto', 'xla', 'pallas' or 'cudnn'; see kernels/attention/api.py.
    remat_policy: rematerialisation of each block: 'none', 'full', 'dots' or 'dots_no_batch'.
    scan_layers: scan the blocks (one compiled body; faster compiles at depth).
  """
  EXECUTION_FIELDS = ("dtype", "linear_impl", "async_bidirectional", "attention_impl", "remat_policy")
  LATER_FIELDS = ("layernorm_epsilon", "gelu_approximate")

  num_classes: int = 1000
  image_size: int = 224
  channels: int = 3
  patch_size: int = 14
  width: int = 6144
  depth: int = 48
  mlp_dim: int = 24576
  num_heads: int = 48
  head_dim: int = 128
  head: str = "map"
  parallel_block: bool = True
  qk_norm: bool = True
  qkv_bias: bool = False
  layernorm_bias: bool = False
  out_bias: bool = True
  mlp_bias: bool = True
  layernorm_epsilon: float = 1e-6
  gelu_approximate: bool = True
  dtype: str = "float32"
  linear_impl: str = "xla"
  async_bidirectional: bool = False
  attention_impl: str = "auto"
  remat_policy: str = "none"
  scan_layers: bool = True

  def __post_init__(self):
    checks = [
        *config_checks.positive(self, ("num_classes", "image_size", "channels", "patch_size", "width", "depth",
                                       "mlp_dim", "num_heads", "head_dim", "layernorm_epsilon")),
        config_checks.one_of(self, "head", HEADS),
        config_checks.one_of(self, "linear_impl", LINEAR_IMPLS),
        config_checks.one_of(self, "remat_policy", REMAT_POLICIES),
        *config_checks.execution_choices(self),
        config_checks.divides(self, "patch_size", "image_size"),
    ]
    if self.head == "map":
      checks.append(config_checks.divides(self, "num_heads", "width", "the MAP head splits the width over the "
                                          "heads; or use head='gap'"))
    config_checks.validate("vit22b.ViT22BConfig", checks)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_tokens(self) -> int:
    """The encoder's sequence length: the patches, and the class token when head='token'."""
    return self.num_patches + (self.head == "token")
