"""`shardline convert`: pretrained ViT weights in from other libraries, shardline checkpoints out to them.

  shardline convert import --from=hf|timm|big_vision --input=FILE_OR_FOLDER --output=MODEL_DIR \\
      --gin_file=models/vit/b16.gin --gin.NUM_CLASSES=1000 --gin.IMAGE_SIZE=224 --gin.CHANNELS=3
  shardline convert export --to=hf|timm|serving --input=MODEL_DIR --output=FOLDER --gin_file=<the run's files>

The gin files configure the shardline model on the shardline side of the conversion; the other side must match
it, and every difference stops the command with exit code 2 before anything is written. An import writes
checkpoint step 0 of a new MODEL_DIR, for `train.init_from`. An export reads a run's checkpoint (the latest, or
--step) and writes Hugging Face's save_pretrained folder (--to=hf), timm's state dict (--to=timm) or a TensorFlow
SavedModel for serving (--to=serving). Conversions run on the host CPU. See docs/transfer.md.
"""
import argparse
import sys
from typing import Sequence

import gin
import jax
import numpy as np

from shardline.core.errors import UserError
from shardline.launch import flags
from shardline.launch import gin_config
from shardline.launch import plan_inputs
from shardline.launch import reporting
from shardline.launch import runtime
from shardline.training.transfer.interop import checkpoint_io
from shardline.training.transfer.interop import exporter
from shardline.training.transfer.interop import importer
from shardline.training.transfer.interop import serving


def build_parser(prog: str = "shardline convert") -> argparse.ArgumentParser:
  """The flags of `shardline convert import` and `shardline convert export`."""
  parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="direction", required=True, metavar="import|export")
  into = commands.add_parser("import", help="another library's ViT weights -> a shardline checkpoint")
  into.add_argument("--from", dest="source_format", required=True, choices=sorted(importer.FORMATS),
                    help="hf: a save_pretrained folder of ViTForImageClassification (config.json and "
                         "model.safetensors); timm: a VisionTransformer state dict in a .safetensors file (or a "
                         "folder holding model.safetensors); big_vision: a ViT checkpoint .npz")
  into.add_argument("--input", required=True, help="the file or folder to read (local, gs:// or s3://)")
  into.add_argument("--output", required=True, help="a new MODEL_DIR for the checkpoint (local, gs:// or s3://)")
  out = commands.add_parser("export", help="a shardline checkpoint -> another library's format")
  out.add_argument("--to", dest="target_format", required=True, choices=sorted([*exporter.FORMATS, "serving"]),
                   help="hf: a folder for ViTForImageClassification.from_pretrained; timm: model.safetensors for "
                        "timm's load_state_dict; serving: a TensorFlow SavedModel of any shardline classifier")
  out.add_argument("--input", required=True, help="the MODEL_DIR (or its checkpoints/ folder) to read")
  out.add_argument("--output", required=True, help="the folder to write (local, gs:// or s3://)")
  out.add_argument("--step", type=int, default=None, help="the checkpoint step; the latest by default")
  out.add_argument("--platforms", default="cpu",
                   help="--to=serving: the platforms the SavedModel runs on, comma-separated from cpu, cuda, tpu")
  for sub in (into, out):
    flags.add_gin_flags(sub)
  return parser


def _model(args: argparse.Namespace, overrides: Sequence[str]):
  """The model the gin files configure (MODEL), and a short description of them for messages."""
  paths = [p for entry in args.gin_search_paths for p in entry.split(",") if p]
  gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides), paths,
                   allow_missing=plan_inputs.PLAN_NEEDS_NO)
  try:
    reference = gin.query_parameter("%MODEL")
  except ValueError as e:
    raise UserError(f"The gin files {', '.join(args.gin_file)} define no MODEL. Pass a model file (such as "
                    "models/vit/b16.gin) or an experiment.") from e
  return reference.scoped_configurable_fn(), " + ".join(args.gin_file)


def _import(args: argparse.Namespace, model, description: str) -> None:
  output = checkpoint_io.check_new_model_dir(args.output)
  print(f"Reading {args.input} as {importer.FORMATS[args.source_format].LIBRARY} for {description} ...", flush=True)
  imported = importer.import_weights(args.source_format, args.input, model, description)
  source = imported.source
  values = sum(int(np.prod(v.shape)) for v in imported.params.values())
  print(f"Converted {len(source.shapes)} tensors ({source.nbytes / 2**20:.1f} MiB) of {source.path} into "
        f"{len(imported.params)} shardline parameters ({values:,} values).")
  for note in imported.notes:
    print(f"  {note}")
  provenance = {"format": args.source_format, "path": source.path, "tensors": len(source.shapes)}
  step_dir = checkpoint_io.save_imported(model, imported.params, output, provenance)
  print(f"Saved {step_dir} (step {checkpoint_io.IMPORT_STEP}, parameters only). Fine-tune from it with "
        f"\"--gin.train.init_from=@init_from()\" --gin.init_from.path=\"'{output}'\".")


def _export(args: argparse.Namespace, model, description: str) -> None:
  platforms = serving.check_platforms([p for p in args.platforms.split(",") if p])
  source = checkpoint_io.CheckpointParams(model, args.input, args.step)
  print(f"Reading checkpoint step {source.step} of {source.directory} ({len(source.shapes)} parameters, one at a "
        "time) ...", flush=True)
  if args.target_format != "serving":
    for line in exporter.export_weights(args.target_format, model, description, source, args.output):
      print(line)
    return
  output = exporter.check_output(args.output, ["saved_model.pb"])
  signature = serving.export_saved_model(model, source.read, sorted(source.shapes), output, platforms)
  inputs = ", ".join(f"{name} {spec}" for name, spec in signature["inputs"].items())
  print(f"Wrote the SavedModel {output} for {', '.join(platforms)}: signature '{serving.SIGNATURE}' takes {inputs} "
        f"(any batch size) and returns logits {signature['logits']}. Load it with "
        f"tf.saved_model.load({output!r}).signatures['{serving.SIGNATURE}'].")


def main(argv: Sequence[str] = None) -> int:
  """Parses flags and gin, and converts."""
  argv = sys.argv[1:] if argv is None else argv

  def run():
    args, overrides = flags.parse_args(build_parser(), argv)
    model, description = _model(args, overrides)
    # Conversions are host work: the checkpoint is gathered on the CPU, whatever accelerators are attached.
    runtime.configure()
    jax.config.update("jax_platforms", "cpu")
    (_import if args.direction == "import" else _export)(args, model, description)
    return 0
  return reporting.run_reporting_user_errors(run, verbose="--verbose" in argv)


if __name__ == "__main__":
  sys.exit(main())
