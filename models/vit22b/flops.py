"""The analytic FLOPs of ViT-22B, to check the model-agnostic count taken from compiled programs."""
from shardline.models.vit22b.config import ViT22BConfig


def forward_matmul_flops(config: ViT22BConfig) -> float:
  """Matmul FLOPs of one image's forward pass (2 per multiply-add).

  Per layer, with n tokens (the patches, plus the class token of head='token'), width e, MLP width m and h heads
  of d:
    QKV 2n·e·3hd + attention out 2n·hd·e + MLP 2·2n·e·m + scores and weighted sum 2·2n²·hd.
  Plus the patch embedding 2·patches·p²c·e, and the head: MAP (a probe attending over n tokens, its MLP), GAP or
  the class token, then the classifier 2e·classes.
  """
  c = config
  n, e, m, hd = c.num_tokens, c.width, c.mlp_dim, c.num_heads * c.head_dim
  layer = 2 * n * e * 3 * hd + 2 * n * hd * e + 2 * 2 * n * e * m + 2 * 2 * n * n * hd
  embed = 2 * c.num_patches * c.patch_size ** 2 * c.channels * e
  head = 2 * e * c.num_classes
  if c.head == "map":
    head += 2 * e * hd + 2 * n * e * 2 * hd + 2 * 2 * n * hd + 2 * hd * e + 2 * 2 * e * m
  return float(c.depth * layer + embed + head)


def train_step_flops(config: ViT22BConfig, batch: int) -> float:
  """Matmul FLOPs of a training step without rematerialisation: forward, and backward at twice the forward."""
  return 3.0 * batch * forward_matmul_flops(config)
