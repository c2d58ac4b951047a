"""A shardline ViT checkpoint -> safetensors in Hugging Face's or timm's naming.

The tensors are produced and written one rule at a time, from parameters read one at a time off the checkpoint
(checkpoint_io.CheckpointParams), so the host holds no second copy of the model. Hugging Face's folder gets the
config.json that from_pretrained needs; timm's file loads with load_state_dict into the model that the printed
timm.create_model call builds.
"""
from typing import List

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training.transfer.interop import checkpoint_io
from shardline.training.transfer.interop import hf_vit
from shardline.training.transfer.interop import safetensors_io
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop import timm_vit

FORMATS = {"hf": hf_vit, "timm": timm_vit}


def check_output(output: str, names: List[str]) -> str:
  """`output` as a folder for new files `names`; refused when one of them exists (nothing is overwritten)."""
  output = paths.check_url(output, "--output")
  existing = [name for name in names if paths.exists(paths.join(output, name))]
  if existing:
    raise UserError(f"--output = {output} already holds {', '.join(existing)}; shardline does not overwrite files. "
                    "Choose a new folder.")
  paths.check_writable(output, "--output")
  return output


def export_weights(fmt: str, model: ImageClassifier, description: str, source: checkpoint_io.CheckpointParams,
                   output: str) -> List[str]:
  """Writes the checkpoint's weights in format `fmt` ('hf' or 'timm') under the folder `output`; returns what to
  print about it."""
  if not isinstance(model, ImageClassifier):
    raise UserError(f"--to={fmt} writes ViT weights, but {description} configures {type(model).__name__}; "
                    "--to=serving exports any classifier.")
  config, library = model.config, FORMATS[fmt]
  library.check_config(config, description)
  files = [library.WEIGHTS_FILE] + ([hf_vit.CONFIG_FILE] if fmt == "hf" else [])
  output = check_output(output, files)
  paths.makedirs(output)
  rules = library.rules(config)
  layout = tensor_map.Layout(config.depth, config.scan_layers)
  shapes = tensor_map.external_shapes(rules, layout, source.shapes)
  weights = paths.join(output, library.WEIGHTS_FILE)
  size = safetensors_io.write(weights, shapes, tensor_map.to_external(rules, layout, source.read),
                              {"format": "pt", "producer": "shardline convert export"})
  lines = [f"Wrote {weights}: {len(shapes)} float32 tensors named as in {library.LIBRARY}, {size / 2**20:.1f} MiB."]
  if fmt == "hf":
    paths.write_text(paths.join(output, hf_vit.CONFIG_FILE), hf_vit.config_json(config))
    lines.append(f"Wrote {paths.join(output, hf_vit.CONFIG_FILE)}. Load it with "
                 f"transformers.ViTForImageClassification.from_pretrained({output!r}).")
  else:
    lines.append(f"Load it with model = {timm_vit.create_model_call(config)}; "
                 f"model.load_state_dict(safetensors.torch.load_file({weights!r})).")
  return lines
