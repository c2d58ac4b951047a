"""The classic ViT: which shardline configurations are one, and its parameters in PyTorch's conventions, which
Hugging Face's ViT and timm's share (Linear weights [out, in], the patch embedding a Conv2d [out, in, height,
width], a class token with a position of its own). hf_vit.py and timm_vit.py name the tensors; this file says
how each is laid out in shardline.
"""
from typing import Sequence

import numpy as np

from shardline.core.errors import UserError
from shardline.models.vit22b.config import ViT22BConfig
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop.tensor_map import Rule

# What the classic ViT is, as ViT22BConfig fields: the values the PyTorch libraries' ViTs have.
CLASSIC = {"parallel_block": False, "qk_norm": False, "qkv_bias": True, "layernorm_bias": True, "out_bias": True,
           "mlp_bias": True}


def check_config(config: ViT22BConfig, library: str, heads: Sequence[str], model: str, **fixed) -> None:
  """Stops unless `config` is a ViT that `library` builds (with one of its pooling `heads`, and the `fixed` values
  of other fields that the library does not let vary)."""
  wrong = [f"{name}={getattr(config, name)!r} (needs {value!r})" for name, value in {**CLASSIC, **fixed}.items()
           if getattr(config, name) != value]
  if config.head not in heads:
    wrong.append(f"head={config.head!r} (needs {' or '.join(map(repr, heads))})")
  if config.num_heads * config.head_dim != config.width:
    wrong.append(f"num_heads x head_dim = {config.num_heads} x {config.head_dim} (needs to equal width "
                 f"{config.width})")
  if wrong:
    raise UserError(f"{model} is not a ViT that {library} builds: {'; '.join(wrong)}. Configure the classic ViT: "
                    "include models/vit/base.gin, or a size file such as models/vit/b16.gin, instead of a "
                    "ViT-22B model file.")


def patch_embedding(weight: str, bias: str, config: ViT22BConfig) -> Sequence[Rule]:
  """Conv2d [e, c, p, p] (OIHW) <-> shardline's [p*p*c, e], whose rows follow patchify's (row, column, channel)
  order."""
  p, c, e = config.patch_size, config.channels, config.width
  return [Rule((weight,), ("patch_embed/kernel",),
               # [e, c, p, p] -> [p, p, c, e] -> [p*p*c, e]
               lambda w: (w.transpose(2, 3, 1, 0).reshape(p * p * c, e),),
               # [p*p*c, e] -> [p, p, c, e] -> [e, c, p, p]
               lambda k: (k.reshape(p, p, c, e).transpose(3, 2, 0, 1),)),
          tensor_map.same(bias, "patch_embed/bias")]


def class_token_and_positions(token: str, positions: str) -> Rule:
  """A class token [1, 1, e] and a position table [1, 1 + n, e] whose row 0 is the class token's <-> shardline's
  class token, which has no position (its position row is added into it), and patch positions [n, e]. Exported
  tables get a zero row 0. The sums are the ones the libraries compute, so logits do not change."""
  return Rule((token, positions), ("cls", "pos_embed/embedding"),
              lambda cls, pos: (cls + pos[:, :1], pos[0, 1:]),
              lambda cls, pos: (cls, np.concatenate([np.zeros_like(cls), pos[None]], axis=1)))


def positions_only(positions: str) -> Rule:
  """A position table [1, n, e] over the patches alone (no class token) <-> [n, e]."""
  return Rule((positions,), ("pos_embed/embedding",), lambda pos: (pos[0],), lambda pos: (pos[None],))


def head_projection(weight: str, config: ViT22BConfig, name: str) -> Rule:
  """One of the query, key and value Linear weights [h*d, e] <-> shardline's [e, h, d] (a per-block rule)."""
  e, h, d = config.width, config.num_heads, config.head_dim
  return Rule((weight,), (name,), lambda w: (w.T.reshape(e, h, d),), lambda k: (k.reshape(e, h * d).T,), True)


def attention_output(weight: str, config: ViT22BConfig) -> Rule:
  """The attention output Linear [e, h*d] <-> shardline's attn_out [h, d, e] (a per-block rule)."""
  e, h, d = config.width, config.num_heads, config.head_dim
  return Rule((weight,), ("attn_out",), lambda w: (w.T.reshape(h, d, e),), lambda k: (k.reshape(h * d, e).T,), True)


def norm(prefix: str, name: str, per_block: bool = False) -> Sequence[Rule]:
  """A LayerNorm's weight and bias <-> shardline's scale and bias."""
  return [tensor_map.same(f"{prefix}.weight", f"{name}/scale", per_block),
          tensor_map.same(f"{prefix}.bias", f"{name}/bias", per_block)]


def linear(prefix: str, kernel: str, bias: str, per_block: bool = False) -> Sequence[Rule]:
  """A Linear's weight [out, in] and bias <-> shardline's kernel [in, out] and bias."""
  return [tensor_map.transposed(f"{prefix}.weight", kernel, per_block), tensor_map.same(f"{prefix}.bias", bias,
                                                                                         per_block)]
