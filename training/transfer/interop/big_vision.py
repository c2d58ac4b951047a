"""big_vision's ViT checkpoints (.npz), imported: big_vision/models/vit.py's parameter paths, joined by '/'.

Its training checkpoints put the parameters under 'params/' (older ones under 'opt/target/'); released weights
often have no prefix. Blocks are 'Transformer/encoderblock_{i}/...', or with scan=True one
'Transformer/encoderblock/...' whose arrays have a leading [depth] axis. Kernels are stored as flax lays them out,
which is shardline's too (the attention's [e, h, d], the patch embedding's HWIO [p, p, c, e]), so only the patch
kernel is reshaped and the query, key and value biases stacked.

Two of big_vision's pooling types are shardline's: 'gap' (head='gap') and 'tok' (head='token'; its class token has
no position, as shardline's). Its 'map' head has attention biases that shardline's MAP head lacks, and a
`rep_size` pre-logits layer has no place in shardline; such files stop with their tensors named. big_vision's MLP
uses the tanh-approximate GELU and LayerNorm epsilon 1e-6, so the configuration must say gelu_approximate = True.
"""
import io
import zipfile
from typing import Dict, List

import ml_dtypes
import numpy as np
from etils import epath

from shardline.core.errors import UserError
from shardline.models.vit22b.config import ViT22BConfig
from shardline.training.transfer.interop import classic_vit
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop.tensor_map import Rule

LIBRARY = "big_vision's ViT"
POSITIONS = "pos_embedding"
_PREFIXES = ("params/", "opt/target/")
_SCANNED = "Transformer/encoderblock/"


def rules(config: ViT22BConfig) -> List[Rule]:
  """big_vision's parameter paths (without 'params/') and where each lives in shardline."""
  p, c, e = config.patch_size, config.channels, config.width
  block = "Transformer/encoderblock_{i}"
  attention = f"{block}/MultiHeadDotProductAttention_0"
  found = [
      tensor_map.reshaped("embedding/kernel", "patch_embed/kernel", lambda s: (p, p, c, e), (p * p * c, e)),
      tensor_map.same("embedding/bias", "patch_embed/bias"),
      classic_vit.positions_only(POSITIONS),
  ]
  if config.head == "token":
    found.append(tensor_map.same("cls", "cls"))
  for norm, name in (("LayerNorm_0", "attn_norm"), ("LayerNorm_1", "mlp_norm")):
    found += [tensor_map.same(f"{block}/{norm}/{kind}", f"{name}/{kind}", True) for kind in ("scale", "bias")]
  found += [tensor_map.same(f"{attention}/{name}/kernel", name, True) for name in ("query", "key", "value")]
  found += [Rule(tuple(f"{attention}/{name}/bias" for name in ("query", "key", "value")), ("qkv_bias",),
                 lambda q, k, v: (np.stack([q, k, v]),), lambda b: tuple(b), True),  # 3 x [h, d] <-> [3, h, d]
            tensor_map.same(f"{attention}/out/kernel", "attn_out", True),
            tensor_map.same(f"{attention}/out/bias", "attn_out_bias", True)]
  for dense, name in (("Dense_0", "mlp_in"), ("Dense_1", "mlp_out")):
    found += [tensor_map.same(f"{block}/MlpBlock_0/{dense}/kernel", name, True),
              tensor_map.same(f"{block}/MlpBlock_0/{dense}/bias", f"{name}_bias", True)]
  found += [tensor_map.same(f"Transformer/encoder_norm/{kind}", f"encoder_norm/{kind}") for kind in ("scale", "bias")]
  found += [tensor_map.same("head/kernel", "head_kernel"), tensor_map.same("head/bias", "head_bias")]
  return found


def check_config(config: ViT22BConfig, model: str) -> None:
  """Stops unless the shardline configuration is a ViT that big_vision builds ('gap' or 'tok' pooling)."""
  classic_vit.check_config(config, LIBRARY, ("token", "gap"), model, gelu_approximate=True, layernorm_epsilon=1e-6)


def _float(name: str, array: np.ndarray, path: str) -> np.ndarray:
  if array.dtype.kind == "V" and array.dtype.itemsize == 2:
    array = array.view(ml_dtypes.bfloat16)  # how big_vision's npz files store bfloat16 (utils.recover_dtype)
  elif array.dtype.kind != "f":
    raise UserError(f"{path}: array {name!r} has dtype {array.dtype}, but weights must be floating point. The file "
                    "is not a checkpoint of model weights; give big_vision's parameter .npz.")
  return array.astype(np.float32)


def read(path: str, what: str = "--input") -> Dict[str, np.ndarray]:
  """The parameters of a big_vision .npz (local, gs:// or s3://) by path without the 'params/' prefix, float32,
  scanned blocks split into 'encoderblock_{i}'; a UserError for a file that is not a readable .npz of weights."""
  source = epath.Path(path)
  if not source.is_file():
    raise UserError(f"{what} = {path}: there is no such file. Give big_vision's checkpoint .npz.")
  try:
    with np.load(io.BytesIO(source.read_bytes()), allow_pickle=False) as archive:
      arrays = {name: archive[name] for name in archive.files}
  except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
    raise UserError(f"{path} is not a readable .npz archive ({type(e).__name__}: {e}): it is truncated or of "
                    "another format. Copy big_vision's checkpoint again.") from e
  # A training checkpoint also holds the optimizer's state beside the parameters: keep the parameters.
  prefix = next((p for p in _PREFIXES if any(name.startswith(p) for name in arrays)), "")
  params = {}
  for name, array in arrays.items():
    if not name.startswith(prefix):
      continue
    short = name[len(prefix):]
    value = _float(name, array, path)
    if short.startswith(_SCANNED):
      for i, row in enumerate(value):
        params[f"Transformer/encoderblock_{i}/{short[len(_SCANNED):]}"] = row
    else:
      params[short] = value
  return params
