"""Weights in and out of shardline, verified logit for logit against the libraries that read and write them.

Reference models are built with random weights by the libraries themselves, with nothing downloaded: Hugging
Face transformers' ViTForImageClassification from a ViTConfig, written by save_pretrained; timm's
create_model('vit_tiny_patch16_224' / 'vit_base_patch16_224', pretrained=False), written by safetensors'
save_file of its state dict. Every parameter is moved off its initialisation first (zero biases and unit
LayerNorm scales would hide a bias or a scale mapped to the wrong place). `shardline convert import` reads them,
shardline's logits are compared with the library's on the same images, then `shardline convert export` writes
them back and the library's own loader (from_pretrained; load_state_dict, strict) gives the logits again. The goal
is a max abs difference of 1e-4 in float32 on CPU; the measured ones are about 1e-6.

timm imports torchvision, whose wheels here are CUDA builds that do not load beside the CPU build of torch. This
process therefore imports timm with a stand-in for torchvision (tests/torchvision_stub.py: a sys.modules finder
that answers `torchvision.*` with empty modules, installed here, in this test process only); timm uses
torchvision for data transforms and FrozenBatchNorm2d, never to build or run a VisionTransformer, and a call into
the stand-in raises. torch, transformers and timm are test-only dependencies: shardline never imports them.
"""
import importlib.metadata

import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.torch import load_file, save_file

from shardline.launch import gin_config
from shardline.training.transfer.interop import checkpoint_io
from tests import helpers
from tests import torchvision_stub



def _check_hub_kernels_absent() -> None:
  """transformers 5 depends on Hugging Face's `kernels` package, whose import name is that of shardline's kernels/
  folder: from the repository root `import kernels` finds shardline's, and importing transformers' ViT fails."""
  try:
    version = importlib.metadata.version("kernels")
  except importlib.metadata.PackageNotFoundError:
    return
  raise RuntimeError(f"Hugging Face's `kernels` {version} is installed; shardline's kernels/ folder shadows it, and "
                     "transformers fails to import. Uninstall it (pip uninstall kernels, as the Makefile does): "
                     "transformers runs ViT without it.")


_check_hub_kernels_absent()
import transformers  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

torchvision_stub.install()
import timm  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TOLERANCE = 1e-4
SIZES = {"ti16": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
         "b16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}
TIMM_NAMES = {"ti16": "vit_tiny_patch16_224", "b16": "vit_base_patch16_224"}
CLASSES = 1000
IMAGES = 224


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """`module` in eval mode with every parameter moved by N(0, 0.05) noise."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in module.parameters():
      parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
  return module.eval()


def _images(count: int, size: int = IMAGES, seed: int = 0) -> torch.Tensor:
  """[count, 3, size, size] float32 images, NCHW as the PyTorch libraries take them."""
  return torch.from_numpy(np.random.default_rng(seed).normal(size=(count, 3, size, size)).astype(np.float32))


def _gin(size: str, *bindings: str):
  """The flags that configure shardline's ViT of `size` at 224 px with 1000 classes."""
  return (f"--gin_file=models/vit/{size}.gin", f"--gin.NUM_CLASSES={CLASSES}", f"--gin.IMAGE_SIZE={IMAGES}",
          "--gin.CHANNELS=3", *bindings)


def _convert(*args: str) -> str:
  result = helpers.run_cli_in_process("convert", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _shardline_logits(model_dir, gin_flags, images: torch.Tensor) -> np.ndarray:
  """shardline's logits of NCHW `images` with the parameters of the checkpoint in `model_dir`."""
  files = [f.split("=", 1)[1] for f in gin_flags if f.startswith("--gin_file=")]
  gin_config.parse(files, [gin_config.override_to_binding(f[len("--gin."):]) for f in gin_flags
                           if f.startswith("--gin.")], finalize=False)
  import gin  # pylint: disable=g-import-not-at-top
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  source = checkpoint_io.CheckpointParams(model, str(model_dir))
  params = traverse_util.unflatten_dict({tuple(n.split("/")): source.read(n) for n in source.shapes})
  return np.asarray(model.logits(params, images.numpy().transpose(0, 2, 3, 1)))


def _round_trip(tmp_path, size: str, library: str, reference: torch.nn.Module, gin_flags) -> dict:
  """Imports the reference's saved weights, compares shardline's logits with the reference's, exports them back,
  and compares the library's logits on the exported weights; returns the max abs differences."""
  images = _images(2)
  with torch.no_grad():
    want = reference(images)
    want = (want.logits if library == "hf" else want).numpy()
  if library == "hf":
    reference.save_pretrained(tmp_path / "reference")
    source = tmp_path / "reference"
  else:
    save_file(reference.state_dict(), str(tmp_path / "reference.safetensors"))
    source = tmp_path / "reference.safetensors"
  _convert("import", f"--from={library}", f"--input={source}", f"--output={tmp_path / 'imported'}", *gin_flags)
  got = _shardline_logits(tmp_path / "imported", gin_flags, images)
  _convert("export", f"--to={library}", f"--input={tmp_path / 'imported'}", f"--output={tmp_path / 'exported'}",
           *gin_flags)
  if library == "hf":
    # use_kernels=False: without the `kernels` package (see _check_hub_kernels_absent) from_pretrained refuses the
    # default use_kernels=True.
    exported = transformers.ViTForImageClassification.from_pretrained(str(tmp_path / "exported"),
                                                                      use_kernels=False).eval()
  else:
    exported = timm.create_model(TIMM_NAMES[size], pretrained=False).eval()
    exported.load_state_dict(load_file(str(tmp_path / "exported" / "model.safetensors")), strict=True)
  with torch.no_grad():
    again = exported(images)
    again = (again.logits if library == "hf" else again).numpy()
  differences = {"import": float(np.abs(got - want).max()), "export": float(np.abs(again - got).max())}
  print(f"{library} {size}: max |logits difference| {differences}")
  assert np.abs(want).max() > 0.5, "the reference's logits are too small to tell a wrong mapping apart"
  assert differences["import"] <= TOLERANCE and differences["export"] <= TOLERANCE, differences
  return differences


def _hf_reference(size: str, seed: int = 0) -> torch.nn.Module:
  torch.manual_seed(seed)
  config = transformers.ViTConfig(**SIZES[size], image_size=IMAGES, patch_size=16, num_labels=CLASSES)
  return _perturbed(transformers.ViTForImageClassification(config), seed)


def _timm_reference(size: str, seed: int = 0) -> torch.nn.Module:
  torch.manual_seed(seed)
  return _perturbed(timm.create_model(TIMM_NAMES[size], pretrained=False), seed)


# Hugging Face's ViTConfig defaults to LayerNorm epsilon 1e-12 (timm's and big_vision's are 1e-6).
HF_EPSILON = "--gin.vit22b.ViT22BConfig.layernorm_epsilon=1e-12"


@pytest.mark.full
def test_hugging_face_vit_ti16_both_ways(tmp_path):
  _round_trip(tmp_path, "ti16", "hf", _hf_reference("ti16"), _gin("ti16", HF_EPSILON))


@pytest.mark.full
def test_timm_vit_ti16_both_ways(tmp_path):
  _round_trip(tmp_path, "ti16", "timm", _timm_reference("ti16"), _gin("ti16"))


@pytest.mark.full
def test_timm_vit_ti16_unrolled_layers(tmp_path):
  _round_trip(tmp_path, "ti16", "timm", _timm_reference("ti16", seed=1),
              _gin("ti16", "--gin.vit22b.ViT22BConfig.scan_layers=False"))


@pytest.mark.full
def test_hugging_face_vit_b16_both_ways(tmp_path):
  _round_trip(tmp_path, "b16", "hf", _hf_reference("b16"), _gin("b16", HF_EPSILON))


@pytest.mark.full
def test_timm_vit_b16_both_ways(tmp_path):
  _round_trip(tmp_path, "b16", "timm", _timm_reference("b16"), _gin("b16"))


@pytest.mark.full
def test_timm_global_average_pooling_without_fc_norm(tmp_path):
  """timm's GAP without a class token and with the final LayerNorm before pooling is shardline's head='gap'; at
  32 px (2x2 patches) it is quick, and the export writes a position table without a class row."""
  torch.manual_seed(2)
  reference = _perturbed(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                                           class_token=False, global_pool="avg", fc_norm=False), 2)
  images = _images(3, size=32)
  with torch.no_grad():
    want = reference(images).numpy()
  save_file(reference.state_dict(), str(tmp_path / "gap.safetensors"))
  flags = ("--gin_file=models/vit/ti16.gin", "--gin.NUM_CLASSES=10", "--gin.IMAGE_SIZE=32", "--gin.CHANNELS=3",
           "--gin.vit22b.ViT22BConfig.head='gap'")
  _convert("import", "--from=timm", f"--input={tmp_path / 'gap.safetensors'}", f"--output={tmp_path / 'run'}",
           *flags)
  got = _shardline_logits(tmp_path / "run", flags, images)
  assert np.abs(got - want).max() <= TOLERANCE
  printed = _convert("export", "--to=timm", f"--input={tmp_path / 'run'}", f"--output={tmp_path / 'out'}", *flags)
  assert "class_token=False, global_pool='avg', fc_norm=False" in printed
  exported = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                               class_token=False, global_pool="avg", fc_norm=False).eval()
  exported.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")), strict=True)
  with torch.no_grad():
    assert np.abs(exported(images).numpy() - got).max() <= TOLERANCE


def test_a_new_resolution_on_import_resizes_the_positions_as_init_from_does(tmp_path):
  """A 224 px checkpoint imported into a 32 px model: the 14x14 position grid (without the class row) becomes
  2x2, exactly as init_from.resize_grid makes it; everything else is copied."""
  from shardline.training.transfer import init_from  # pylint: disable=g-import-not-at-top
  reference = _timm_reference("ti16", seed=3)
  save_file(reference.state_dict(), str(tmp_path / "ti.safetensors"))
  flags = ("--gin_file=models/vit/ti16.gin", "--gin.NUM_CLASSES=1000", "--gin.IMAGE_SIZE=32", "--gin.CHANNELS=3")
  printed = _convert("import", "--from=timm", f"--input={tmp_path / 'ti.safetensors'}",
                     f"--output={tmp_path / 'run'}", *flags)
  assert "position embedding resized bilinearly from a 14x14 to a 2x2 patch grid" in printed
  gin_config.parse(["models/vit/ti16.gin"], ["NUM_CLASSES=1000", "IMAGE_SIZE=32", "CHANNELS=3"], finalize=False)
  import gin  # pylint: disable=g-import-not-at-top
  source = checkpoint_io.CheckpointParams(gin.query_parameter("%MODEL").scoped_configurable_fn(),
                                          str(tmp_path / "run"))
  table = reference.pos_embed.detach().numpy()[0]
  np.testing.assert_allclose(source.read("pos_embed/embedding"), np.asarray(init_from.resize_grid(table[1:], 4)),
                             rtol=0, atol=0)
  np.testing.assert_array_equal(source.read("cls")[0, 0], reference.cls_token.detach().numpy()[0, 0] + table[0])


@pytest.mark.full
def test_fine_tune_transformers_weights_then_serve_with_the_same_accuracy(tmp_path):
  """ViT-Ti/16 weights written by transformers (random, 224 px, 1000 classes) -> `shardline convert import` ->
  fine-tuned on the digits at 32 px and 10 classes (experiments/vit_ti16_digits_finetune_cpu8.gin, shortened to
  30 steps with 10 of warm-up: 86% here) -> `shardline convert export --to=serving`: the SavedModel, run by
  TensorFlow on the test split as the loader prepares it, scores exactly `shardline eval`'s accuracy."""
  import re  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from shardline.training.transfer.interop import serving  # pylint: disable=g-import-not-at-top
  _hf_reference("ti16").save_pretrained(tmp_path / "hf")
  _convert("import", "--from=hf", f"--input={tmp_path / 'hf'}", f"--output={tmp_path / 'imported'}",
           *_gin("ti16", HF_EPSILON))
  experiment = "--gin_file=experiments/vit_ti16_digits_finetune_cpu8.gin"
  run = (experiment, f"--gin.MODEL_DIR='{tmp_path / 'fine_tuned'}'", f"--gin.PRETRAINED='{tmp_path / 'imported'}'")
  trained = helpers.run_cli_in_process("train", *run, "--gin.train.steps=30", "--gin.train.log_every=30",
                                       "--gin.train.eval_every=30", "--gin.train.checkpoint_every=30",
                                       "--gin.optimizer.make_optimizer.warmup_steps=10")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert ("19 copied; 1 resized: pos_embed/embedding; 2 zero-initialised (shape changed): head_bias, head_kernel"
          in trained.stdout), trained.stdout[-3000:]
  evaluated = helpers.run_cli_in_process("eval", *run)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  accuracy = re.search(r"eval_accuracy (\d+\.\d+)%", evaluated.stdout).group(1)
  _convert("export", "--to=serving", f"--input={tmp_path / 'fine_tuned'}", f"--output={tmp_path / 'served'}",
           experiment)

  gin_config.parse(["experiments/vit_ti16_digits_finetune_cpu8.gin"], allow_missing=("MODEL_DIR",), finalize=False)
  transform = gin.query_parameter("stream.eval_transform").scoped_configurable_fn()
  test = helpers.read_split("digits", "test", tmp_path / "cache", transform)
  low, high = transform.device_value_ranges()["image"]
  # As the loader maps the workers' uint8 pixels on the device (data/pipeline.py).
  images = test["image"].astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
  serve = serving.load(str(tmp_path / "served"))
  predictions = np.concatenate([serve(image=images[i:i + 100]).argmax(-1) for i in range(0, len(images), 100)])
  served = f"{100 * np.mean(predictions == test['label']):.2f}"
  print(f"fine-tuned ViT-Ti/16: shardline eval accuracy {accuracy}%, SavedModel in TensorFlow {served}% "
        f"({len(images)} test images)")
  assert served == accuracy and float(accuracy) > 30
