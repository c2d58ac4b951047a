"""timm's VisionTransformer state dict (vit_tiny_patch16_224, vit_base_patch16_224, ...), as save_file(model.
state_dict()) and the Hugging Face hub's timm folders store it.

timm fuses query, key and value into one Linear (attn.qkv) whose output rows are ordered (q|k|v, head, head_dim).
Two of its pooling heads are shardline's: global_pool='token' (a class token, the default) is head='token', and
global_pool='avg' with fc_norm=False (the final LayerNorm before averaging) is head='gap'. timm's own GAP models
normalise after averaging (fc_norm) instead, which shardline does not build. timm's ViTs use LayerNorm epsilon
1e-6 and the exact GELU unless created with other layers.
"""
from typing import List

import numpy as np

from shardline.models.vit22b.config import ViT22BConfig
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop import classic_vit
from shardline.training.transfer.interop.tensor_map import Rule

LIBRARY = "timm's VisionTransformer"
WEIGHTS_FILE = "model.safetensors"
POSITIONS = "pos_embed"


def rules(config: ViT22BConfig) -> List[Rule]:
  """The tensors of timm's VisionTransformer and where each lives in shardline."""
  e, h, d = config.width, config.num_heads, config.head_dim
  block = "blocks.{i}"
  embeddings = (classic_vit.class_token_and_positions("cls_token", POSITIONS) if config.head == "token"
                else classic_vit.positions_only(POSITIONS))
  return [
      *classic_vit.patch_embedding("patch_embed.proj.weight", "patch_embed.proj.bias", config),
      embeddings,
      *classic_vit.norm(f"{block}.norm1", "attn_norm", per_block=True),
      Rule((f"{block}.attn.qkv.weight",), ("query", "key", "value"),
           # [3*h*d, e] -> [3, h, d, e] -> [3, e, h, d]
           lambda w: tuple(w.reshape(3, h, d, e).transpose(0, 3, 1, 2)),
           # 3 x [e, h, d] -> [3, e, h, d] -> [3, h, d, e] -> [3*h*d, e]
           lambda q, k, v: (np.stack([q, k, v]).transpose(0, 2, 3, 1).reshape(3 * h * d, e),), per_block=True),
      tensor_map.reshaped(f"{block}.attn.qkv.bias", "qkv_bias", lambda s: (3 * h * d,), (3, h, d), per_block=True),
      classic_vit.attention_output(f"{block}.attn.proj.weight", config),
      tensor_map.same(f"{block}.attn.proj.bias", "attn_out_bias", per_block=True),
      *classic_vit.norm(f"{block}.norm2", "mlp_norm", per_block=True),
      *classic_vit.linear(f"{block}.mlp.fc1", "mlp_in", "mlp_in_bias", per_block=True),
      *classic_vit.linear(f"{block}.mlp.fc2", "mlp_out", "mlp_out_bias", per_block=True),
      *classic_vit.norm("norm", "encoder_norm"),
      *classic_vit.linear("head", "head_kernel", "head_bias"),
  ]


def check_config(config: ViT22BConfig, model: str) -> None:
  """Stops unless the shardline configuration is a ViT that timm builds."""
  classic_vit.check_config(config, LIBRARY, ("token", "gap"), model)


def create_model_call(config: ViT22BConfig) -> str:
  """The timm.create_model call that builds this configuration, for load_state_dict."""
  sizes = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}
  size = sizes.get((config.width, config.depth, config.num_heads))
  name = f"vit_{size}_patch{config.patch_size}_224" if size else "vit_base_patch16_224"
  args = [repr(name), "pretrained=False", f"num_classes={config.num_classes}", f"img_size={config.image_size}"]
  if config.channels != 3:
    args.append(f"in_chans={config.channels}")
  if not size:
    args += [f"patch_size={config.patch_size}", f"embed_dim={config.width}", f"depth={config.depth}",
             f"num_heads={config.num_heads}", f"mlp_ratio={config.mlp_dim / config.width:g}"]
  if config.head == "gap":
    args += ["class_token=False", "global_pool='avg'", "fc_norm=False"]
  if config.gelu_approximate:
    args.append("act_layer='gelu_tanh'")
  if config.layernorm_epsilon != 1e-6:
    args.append(f"norm_layer=functools.partial(torch.nn.LayerNorm, eps={config.layernorm_epsilon:g})")
  return f"timm.create_model({', '.join(args)})"
