"""Hugging Face's ViTForImageClassification: its tensor names, and its config.json read and written.

A save_pretrained folder holds config.json and model.safetensors. The names are the ones on disk, which
from_pretrained reads (transformers 5 renames some modules in memory, not in files). The model has no pooler: its
logits are the classifier applied to the final LayerNorm's class token, shardline's head='token'. Its LayerNorm
epsilon (layer_norm_eps, 1e-12 by default) and GELU (hidden_act: 'gelu' is exact) are read from config.json and
must be the shardline configuration's.
"""
import json
from typing import Any, Dict, List

import numpy as np

from shardline.core.errors import UserError
from shardline.models.vit22b.config import ViT22BConfig
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop import classic_vit
from shardline.training.transfer.interop.tensor_map import Rule

LIBRARY = "Hugging Face's ViTForImageClassification"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# hidden_act -> gelu_approximate; 'gelu_new' and 'gelu_pytorch_tanh' are the tanh approximation flax uses.
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
POSITIONS = "vit.embeddings.position_embeddings"


def rules(config: ViT22BConfig) -> List[Rule]:
  """The tensors of ViTForImageClassification and where each lives in shardline."""
  layer = "vit.encoder.layer.{i}"
  attention = f"{layer}.attention.attention"
  qkv = [f"{attention}.{name}" for name in ("query", "key", "value")]
  h, d = config.num_heads, config.head_dim
  return [
      *classic_vit.patch_embedding("vit.embeddings.patch_embeddings.projection.weight",
                                 "vit.embeddings.patch_embeddings.projection.bias", config),
      classic_vit.class_token_and_positions("vit.embeddings.cls_token", POSITIONS),
      *classic_vit.norm(f"{layer}.layernorm_before", "attn_norm", per_block=True),
      *(classic_vit.head_projection(f"{p}.weight", config, name) for p, name in zip(qkv, ("query", "key", "value"))),
      Rule(tuple(f"{p}.bias" for p in qkv), ("qkv_bias",),
           lambda q, k, v: (np.stack([q, k, v]).reshape(3, h, d),),  # 3 x [h*d] -> [3, h, d]
           lambda b: tuple(b.reshape(3, h * d)), per_block=True),
      classic_vit.attention_output(f"{layer}.attention.output.dense.weight", config),
      tensor_map.same(f"{layer}.attention.output.dense.bias", "attn_out_bias", per_block=True),
      *classic_vit.norm(f"{layer}.layernorm_after", "mlp_norm", per_block=True),
      *classic_vit.linear(f"{layer}.intermediate.dense", "mlp_in", "mlp_in_bias", per_block=True),
      *classic_vit.linear(f"{layer}.output.dense", "mlp_out", "mlp_out_bias", per_block=True),
      *classic_vit.norm("vit.layernorm", "encoder_norm"),
      *classic_vit.linear("classifier", "head_kernel", "head_bias"),
  ]


def check_config(config: ViT22BConfig, model: str) -> None:
  """Stops unless the shardline configuration is a ViT that ViTForImageClassification can be."""
  classic_vit.check_config(config, LIBRARY, ("token",), model)


def read_config(text: str, path: str) -> Dict[str, Any]:
  """config.json's fields; a UserError when it is not a ViT's."""
  try:
    fields = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not JSON ({e}); it should be the config.json that save_pretrained wrote.") from e
  if not isinstance(fields, dict) or fields.get("model_type") != "vit":
    kind = fields.get("model_type") if isinstance(fields, dict) else None
    raise UserError(f"{path} describes a {kind!r} model, not a ViT (model_type 'vit'): the checkpoint is of "
                    "another architecture, which `shardline convert --from=hf` cannot read.")
  return fields


def check_against(fields: Dict[str, Any], config: ViT22BConfig, path: str, model: str) -> None:
  """Stops, naming each difference and the gin override that fixes it, unless config.json describes `config` (the
  image size may differ: the position table is resized)."""
  act = fields.get("hidden_act", "gelu")
  if act not in ACTIVATIONS:
    raise UserError(f"{path}: hidden_act={act!r}; shardline's ViT has the exact GELU ('gelu') or its tanh "
                    f"approximation ({', '.join(k for k, v in ACTIVATIONS.items() if v)}), not this activation.")
  pairs = [("hidden_size", "width", fields.get("hidden_size", 768)),
           ("num_hidden_layers", "depth", fields.get("num_hidden_layers", 12)),
           ("num_attention_heads", "num_heads", fields.get("num_attention_heads", 12)),
           ("intermediate_size", "mlp_dim", fields.get("intermediate_size", 3072)),
           ("patch_size", "patch_size", fields.get("patch_size", 16)),
           ("num_channels", "channels", fields.get("num_channels", 3)),
           ("qkv_bias", "qkv_bias", fields.get("qkv_bias", True)),
           ("layer_norm_eps", "layernorm_epsilon", fields.get("layer_norm_eps", 1e-12)),
           ("hidden_act", "gelu_approximate", ACTIVATIONS[act])]
  wrong = [f"{key}={fields.get(key, value)!r}, but {field}={getattr(config, field)!r} "
           f"(--gin.vit22b.ViT22BConfig.{field}={value!r})" for key, field, value in pairs
           if getattr(config, field) != value]
  if wrong:
    raise UserError(f"{path} describes another ViT than {model}: {'; '.join(wrong)}. Its weights would give other "
                    "logits in shardline; set the values shown (or use the model file of its size).")


def config_json(config: ViT22BConfig) -> str:
  """The config.json of ViTForImageClassification for `config`, as save_pretrained writes it."""
  labels = {str(i): f"LABEL_{i}" for i in range(config.num_classes)}
  return json.dumps({
      "architectures": ["ViTForImageClassification"], "model_type": "vit",
      "hidden_size": config.width, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
      "intermediate_size": config.mlp_dim, "hidden_act": "gelu_pytorch_tanh" if config.gelu_approximate else "gelu",
      "layer_norm_eps": config.layernorm_epsilon, "image_size": config.image_size, "patch_size": config.patch_size,
      "num_channels": config.channels, "qkv_bias": config.qkv_bias, "encoder_stride": config.patch_size,
      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
      "id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}, "dtype": "float32"}, indent=2) + "\n"
