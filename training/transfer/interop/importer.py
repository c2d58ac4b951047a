"""Another library's ViT weights -> shardline parameters of a configured model, every problem named first.

The file's tensors are checked against the ones the library would write for the gin-configured model before any
is converted: a missing or an extra tensor (both lists given), a shape that differs (a file of another
architecture or size), a dtype that is not floating point, a truncated file. A position table for another image
size is resized to the model's patch grid with init_from's rule (bilinear on the square grid).
"""
import dataclasses
import math
from typing import Callable, Dict, List, Tuple

import numpy as np
from etils import epath

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training.transfer import init_from
from shardline.training.transfer.interop import big_vision
from shardline.training.transfer.interop import checkpoint_io
from shardline.training.transfer.interop import hf_vit
from shardline.training.transfer.interop import safetensors_io
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop import timm_vit

FORMATS = {"hf": hf_vit, "timm": timm_vit, "big_vision": big_vision}
# A tensor name that only one format has, to say which format a file looks like.
_MARKS = {"hf": "vit.embeddings.patch_embeddings.projection.weight", "timm": "patch_embed.proj.weight",
          "big_vision": "embedding/kernel"}


@dataclasses.dataclass
class Source:
  """The tensors of an input file: names, shapes and a reader of float32 arrays."""
  path: str
  shapes: Dict[str, Tuple[int, ...]]
  read: Callable[[str], np.ndarray]
  nbytes: int
  notes: List[str]


@dataclasses.dataclass
class Imported:
  """Shardline parameters (flat names) converted from a file, and what was done on the way."""
  params: Dict[str, np.ndarray]
  source: Source
  notes: List[str]


def _weights_path(path: str, name: str, fmt: str) -> str:
  """The weights file: `path` itself, or `name` inside the folder `path`."""
  path = paths.check_url(path, "--input")
  if epath.Path(path).is_dir():
    if not paths.exists(paths.join(path, name)) and paths.exists(paths.join(path, f"{name}.index.json")):
      raise UserError(f"--input = {path} holds a checkpoint sharded over several files ({name}.index.json), which "
                      "shardline does not read. Save it as one file, e.g. save_pretrained(folder, "
                      "max_shard_size='1000GB'), and convert that folder.")
    return paths.join(path, name)
  if path.endswith((".bin", ".pth", ".pt", ".ckpt")):
    raise UserError(f"--input = {path}: shardline reads safetensors files, not pickled PyTorch files (loading those "
                    "can run code). Save the state dict with safetensors.torch.save_file, or with "
                    f"save_pretrained(..., safe_serialization=True), and convert that file (--from={fmt}).")
  return path


def open_source(fmt: str, path: str, config, model: str) -> Source:
  """Opens and checks the input of format `fmt` for the configuration `config` (described as `model`)."""
  if fmt == "big_vision":
    arrays = big_vision.read(paths.check_url(path, "--input"))
    notes = ["big_vision's files do not record the GELU or LayerNorm epsilon: its ViT's (tanh GELU, 1e-6) assumed"]
    return Source(path, {k: v.shape for k, v in arrays.items()}, arrays.__getitem__,
                  sum(v.nbytes for v in arrays.values()), notes)
  weights = _weights_path(path, FORMATS[fmt].WEIGHTS_FILE, fmt)
  notes = []
  if fmt == "hf":
    config_path = str(epath.Path(weights).parent / hf_vit.CONFIG_FILE)
    if not epath.Path(config_path).is_file():
      raise UserError(f"--input = {path}: there is no {hf_vit.CONFIG_FILE} beside {weights}. It says how many "
                      "heads the attention has, which the weights do not show: give the folder that "
                      "save_pretrained wrote, with both files.")
    fields = hf_vit.read_config(paths.read_text(config_path), config_path)
    hf_vit.check_against(fields, config, config_path, model)
    notes.append(f"{hf_vit.CONFIG_FILE} agrees with the model (hidden_act {fields.get('hidden_act', 'gelu')!r}, "
                 f"layer_norm_eps {fields.get('layer_norm_eps', 1e-12):g})")
  else:
    defaults = not config.gelu_approximate and config.layernorm_epsilon == 1e-6
    notes.append("timm's files do not record the GELU or the LayerNorm epsilon: " + (
        "the model's are timm's defaults (exact GELU, 1e-6)" if defaults else
        f"the model's (gelu_approximate={config.gelu_approximate}, epsilon {config.layernorm_epsilon:g}) are not "
        "timm's defaults; they must be those the weights were trained with"))
  tensors = safetensors_io.read(weights)
  return Source(weights, tensors.shapes, tensors.array, tensors.nbytes(), notes)


def _looks_like(shapes: Dict[str, Tuple[int, ...]]) -> str:
  found = [fmt for fmt, mark in _MARKS.items() if mark in shapes]
  return f" The file looks like a {found[0]} checkpoint: try --from={found[0]}." if found else ""


def _grid_only(got: Tuple[int, ...], want: Tuple[int, ...], extra_tokens: int) -> bool:
  """Whether two position tables differ only in a square patch grid (besides `extra_tokens` class rows)."""
  if len(got) != len(want) or got[:-2] != want[:-2] or got[-1] != want[-1]:
    return False
  patches = got[-2] - extra_tokens
  return patches > 0 and math.isqrt(patches) ** 2 == patches


def check_tensors(fmt: str, source: Source, expected: Dict[str, Tuple[int, ...]], model: str,
                  extra_tokens: int) -> None:
  """Stops, naming the tensors, unless the file holds exactly the expected tensors with the expected shapes (the
  position table may differ in its patch grid)."""
  library = FORMATS[fmt].LIBRARY
  missing = sorted(set(expected) - set(source.shapes))
  extra = sorted(set(source.shapes) - set(expected))
  if missing or extra:
    raise UserError(f"{source.path} does not hold the tensors of {library} configured as {model}: "
                    f"{len(missing)} missing ({tensor_map.listing(missing) or 'none'}); {len(extra)} extra "
                    f"({tensor_map.listing(extra) or 'none'}). It holds another architecture or pooling head, "
                    f"or another library's names.{_looks_like(source.shapes)} Configure the model it holds "
                    "(models/vit/*.gin, and --gin.vit22b.ViT22BConfig.head), or convert the right file.")
  positions = FORMATS[fmt].POSITIONS
  wrong = [f"{name}: file {source.shapes[name]}, model {shape}" for name, shape in expected.items()
           if tuple(source.shapes[name]) != tuple(shape)
           and not (name == positions and _grid_only(tuple(source.shapes[name]), tuple(shape), extra_tokens))]
  if wrong:
    raise UserError(f"{source.path} holds {library} weights of another size than {model}: {'; '.join(wrong[:6])}"
                    f"{f' and {len(wrong) - 6} more' if len(wrong) > 6 else ''}. Configure the size it holds (for "
                    "example models/vit/b16.gin) and its class count (--gin.NUM_CLASSES), image size and channels.")


def _resize_positions(params: Dict[str, np.ndarray], want: Tuple[int, ...], notes: List[str]) -> None:
  table = params["pos_embed/embedding"]
  if table.shape == want:
    return
  params["pos_embed/embedding"] = np.asarray(init_from.resize_grid(table, want[0]))
  old, new = math.isqrt(table.shape[0]), math.isqrt(want[0])
  notes.append(f"position embedding resized bilinearly from a {old}x{old} to a {new}x{new} patch grid")


def import_weights(fmt: str, path: str, model: ImageClassifier, description: str) -> Imported:
  """The shardline parameters of `model` (its configuration described as `description` in messages) from the file
  or folder `path` of format `fmt` ('hf', 'timm' or 'big_vision')."""
  if not isinstance(model, ImageClassifier):
    raise UserError(f"shardline convert imports ViT weights, but {description} configures "
                    f"{type(model).__name__}. Pass a ViT model file, such as models/vit/b16.gin.")
  config = model.config
  FORMATS[fmt].check_config(config, description)
  source = open_source(fmt, path, config, description)
  rules = FORMATS[fmt].rules(config)
  layout = tensor_map.Layout(config.depth, config.scan_layers)
  want = checkpoint_io.model_shapes(model)
  extra_tokens = 1 if config.head == "token" and fmt != "big_vision" else 0
  check_tensors(fmt, source, tensor_map.external_shapes(rules, layout, want), description, extra_tokens)

  def read(name: str) -> np.ndarray:
    value = source.read(name)
    if not np.all(np.isfinite(value)):
      raise UserError(f"{source.path}: tensor {name!r} holds NaN or Inf values; the weights are damaged. Convert "
                      "a good copy.")
    return value
  params = tensor_map.to_shardline(rules, layout, read)
  notes = list(source.notes)
  if config.head == "token" and fmt != "big_vision":
    notes.append("class token's position row added into the class token (shardline's has no position)")
  _resize_positions(params, want["pos_embed/embedding"], notes)
  got = {name: tuple(value.shape) for name, value in params.items()}
  if got != want:  # the rules must cover the model exactly: a mismatch is a bug in them, not bad input
    raise ValueError(f"{fmt} rules do not build the model's parameters: {sorted(set(got.items()) ^ set(want.items()))}")
  return Imported(params, source, notes)
