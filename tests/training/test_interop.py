"""`shardline convert` without the reference libraries: the classic ViT configurations, the tensor rules both ways,
the safetensors reader and writer, every bad input's exit 2 and message, big_vision's .npz, and the serving export
in TensorFlow's runtime. The comparisons with transformers and timm themselves are in test_interop_reference.py.

big_vision is not on the package registry: its .npz files are built here from the parameter paths of
big_vision/models/vit.py (written out below, independently of shardline's rules), and its forward pass is
transcribed in numpy from the same file.
"""
import json
import math
import struct
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from shardline.launch import gin_config
from shardline.models.vit22b import flops as vit_flops
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training.planning import mfu as flops_lib
from shardline.training.transfer.interop import big_vision
from shardline.training.transfer.interop import checkpoint_io
from shardline.training.transfer.interop import hf_vit
from shardline.training.transfer.interop import safetensors_io
from shardline.training.transfer.interop import serving
from shardline.training.transfer.interop import tensor_map
from shardline.training.transfer.interop import timm_vit
from tests import helpers

# A classic ViT small enough for unit tests: ViT-Ti/16's width and heads, two blocks, 32 px (2x2 patches).
SMALL = ("--gin_file=models/vit/ti16.gin", "--gin.NUM_CLASSES=10", "--gin.IMAGE_SIZE=32", "--gin.CHANNELS=3",
         "--gin.vit22b.ViT22BConfig.depth=2")
HF_EPSILON = "--gin.vit22b.ViT22BConfig.layernorm_epsilon=1e-12"


def _model(flags):
  """The model that gin flags configure, as `shardline convert` builds it."""
  files = [f.split("=", 1)[1] for f in flags if f.startswith("--gin_file=")]
  bindings = [gin_config.override_to_binding(f[len("--gin."):]) for f in flags if f.startswith("--gin.")]
  gin_config.parse(files, bindings, allow_missing=("MODEL_DIR",), finalize=False)
  return gin.query_parameter("%MODEL").scoped_configurable_fn()


def _random_params(model, seed=0):
  """Every parameter of `model` random (flat names), LayerNorm scales around 1."""
  rng = np.random.default_rng(seed)
  return {name: (1.0 if name.endswith("scale") else 0.0) + 0.05 * rng.standard_normal(shape).astype(np.float32)
          for name, shape in checkpoint_io.model_shapes(model).items()}


def _write_library_file(path, fmt, model, params, metadata=None):
  """`params` written in `fmt`'s naming (HF: with its config.json beside) by shardline's own writer."""
  config = model.config
  module = {"hf": hf_vit, "timm": timm_vit}[fmt]
  rules, layout = module.rules(config), tensor_map.Layout(config.depth, config.scan_layers)
  shapes = tensor_map.external_shapes(rules, layout, checkpoint_io.model_shapes(model))
  path.mkdir(parents=True, exist_ok=True)
  safetensors_io.write(str(path / "model.safetensors"), shapes, tensor_map.to_external(rules, layout, params.get),
                       metadata or {"format": "pt"})
  if fmt == "hf":
    (path / "config.json").write_text(hf_vit.config_json(config))
  return path


def _convert(*args):
  return helpers.run_cli_in_process("convert", *args)


def save_random_vit_ti16_import(model_dir):
  """`shardline convert import` of a Hugging Face ViT-Ti/16 folder with random weights, written here with numpy
  (no torch): the parent that experiments/vit_ti16_digits_finetune_cpu8.gin fine-tunes (its PRETRAINED), for tests
  that run that experiment."""
  flags = ("--gin_file=models/vit/ti16.gin", "--gin.NUM_CLASSES=1000", "--gin.IMAGE_SIZE=224", "--gin.CHANNELS=3",
           HF_EPSILON)
  model = _model(flags)
  folder = _write_library_file(Path(f"{model_dir}_hf"), "hf", model, _random_params(model))
  result = _convert("import", "--from=hf", f"--input={folder}", f"--output={model_dir}", *flags)
  assert result.returncode == 0, result.stderr[-3000:]


def _logits(model, params, images):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return np.asarray(model.logits(traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in params.items()}),
                                 images))


# The model's options.

def test_new_options_keep_the_fingerprints_of_existing_checkpoints():
  before = ImageClassifier(helpers.tiny_vit()).fingerprint()["config"]
  assert "layernorm_epsilon" not in before and "gelu_approximate" not in before
  after = ImageClassifier(helpers.tiny_vit(layernorm_epsilon=1e-12, gelu_approximate=False)).fingerprint()["config"]
  assert after["layernorm_epsilon"] == 1e-12 and after["gelu_approximate"] is False


@pytest.mark.parametrize("size, timm_count", [("ti16", 5_717_416), ("s16", 22_050_664), ("b16", 86_567_656),
                                              ("l16", 304_326_632)])
def test_classic_sizes_have_timms_parameter_counts(size, timm_count):
  """timm's count at 224 px with 1000 classes, less the class token's position row, which shardline folds into
  the token."""
  model = _model((f"--gin_file=models/vit/{size}.gin", "--gin.NUM_CLASSES=1000", "--gin.IMAGE_SIZE=224",
                  "--gin.CHANNELS=3"))
  shapes = checkpoint_io.model_shapes(model)
  assert sum(math.prod(s) for s in shapes.values()) == timm_count - model.config.width
  assert shapes["cls"] == (1, 1, model.config.width) and shapes["pos_embed/embedding"][0] == 196


@pytest.mark.full
def test_the_class_token_is_pooled_and_counted_in_the_flops():
  model = _model(SMALL)
  params = _random_params(model)
  images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  base = _logits(model, params, images)
  moved = dict(params, cls=params["cls"] + np.random.default_rng(2).normal(size=params["cls"].shape))
  assert np.abs(_logits(model, moved, images) - base).max() > 1e-2  # the pooled token is the class token
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in model.batch_spec(8).items()}
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  compiled = jax.jit(jax.grad(lambda p, b: model.loss_and_metrics(p, b, None)[0])).lower(abstract, batch).compile()
  config = model.config
  # The backward computes no gradient for the images: less the patch embedding's 2·patches·p²c·e per image, which
  # is 4% of this tiny model's step (test_flops.py's models have too many tokens for it to matter).
  analytic = (vit_flops.train_step_flops(config, 8)
              - 8 * 2 * config.num_patches * config.patch_size ** 2 * config.channels * config.width)
  counted = flops_lib.compiled_flops(compiled)
  assert abs(counted - analytic) / analytic < 0.005, (counted, analytic)


# The rules and the file format.

@pytest.mark.parametrize("fmt", ["hf", "timm", "big_vision"])
@pytest.mark.parametrize("scan", [True, False])
def test_rules_go_there_and_back_exactly(fmt, scan):
  flags = (*SMALL, f"--gin.vit22b.ViT22BConfig.scan_layers={scan}")
  if fmt == "big_vision":
    flags += ("--gin.vit22b.ViT22BConfig.gelu_approximate=True",)
  model = _model(flags)
  params = _random_params(model, seed=2)
  module = {"hf": hf_vit, "timm": timm_vit, "big_vision": big_vision}[fmt]
  rules, layout = module.rules(model.config), tensor_map.Layout(model.config.depth, scan)
  shapes = tensor_map.external_shapes(rules, layout, checkpoint_io.model_shapes(model))
  external = dict(tensor_map.to_external(rules, layout, params.get))
  assert {k: v.shape for k, v in external.items()} == shapes
  back = tensor_map.to_shardline(rules, layout, external.get)
  assert back.keys() == params.keys()
  for name, value in params.items():
    if name == "cls" and fmt != "big_vision":
      continue  # exported with its position row at zero, so it comes back as it left
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_safetensors_reader_reads_the_writer_and_bfloat16(tmp_path):
  values = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float32([[-1.5]])}
  path = str(tmp_path / "t.safetensors")
  size = safetensors_io.write(path, {k: v.shape for k, v in values.items()}, values.items(), {"format": "pt"})
  read = safetensors_io.read(path)
  assert read.shapes == {"a": (2, 3), "b": (1, 1)} and read.metadata == {"format": "pt"}
  header_bytes = struct.unpack("<Q", (tmp_path / "t.safetensors").read_bytes()[:8])[0]
  assert size == (tmp_path / "t.safetensors").stat().st_size == 8 + header_bytes + 28 and header_bytes % 8 == 0
  np.testing.assert_array_equal(read.array("a"), values["a"])
  raw = np.float32([1.0, -2.5, 3.140625]).astype(ml_dtypes.bfloat16)
  header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + raw.tobytes())
  np.testing.assert_array_equal(safetensors_io.read(path).array("x"), np.float32([1.0, -2.5, 3.140625]))


# Bad input: exit 2, one paragraph, the offending tensor named, nothing written.

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  """A ViTForImageClassification folder (config.json, model.safetensors) of the SMALL model, random weights."""
  model = _model((*SMALL, HF_EPSILON))
  return _write_library_file(tmp_path_factory.mktemp("hf") / "vit", "hf", model, _random_params(model))


def _refused(tmp_path, *args):
  result = _convert("import", f"--output={tmp_path / 'out'}", *args)
  assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
  assert result.stderr.startswith("shardline: error: ") and result.stderr.count("\n") == 1, result.stderr
  assert not (tmp_path / "out").exists()
  return result.stderr


def test_a_file_of_another_size_names_the_tensors_and_shapes(tmp_path, hf_folder):
  message = _refused(tmp_path, "--from=hf", f"--input={hf_folder}", *SMALL, HF_EPSILON,
                     "--gin.vit22b.ViT22BConfig.mlp_dim=512")
  assert "intermediate_size=768, but mlp_dim=512 (--gin.vit22b.ViT22BConfig.mlp_dim=768)" in message
  model = _model(SMALL)  # timm's files record no configuration: the shapes tell
  timm_folder = _write_library_file(tmp_path / "timm", "timm", model, _random_params(model))
  message = _refused(tmp_path, "--from=timm", f"--input={timm_folder}", *SMALL, "--gin.vit22b.ViT22BConfig.mlp_dim=512")
  assert "blocks.0.mlp.fc1.weight: file (768, 192), model (512, 192)" in message


def test_another_libraries_file_lists_the_missing_and_the_extra_tensors(tmp_path):
  model = _model(SMALL)
  timm_file = _write_library_file(tmp_path / "timm", "timm", model, _random_params(model))
  (timm_file / "config.json").write_text(hf_vit.config_json(model.config).replace("1e-06", "1e-12"))
  message = _refused(tmp_path, "--from=hf", f"--input={timm_file}", *SMALL, HF_EPSILON)
  assert "40 missing (classifier.bias, classifier.weight, vit.embeddings.cls_token" in message
  assert "32 extra (blocks.0.attn.proj.bias, blocks.0.attn.proj.weight" in message
  assert "try --from=timm" in message


def test_a_missing_and_an_extra_tensor_are_both_named(tmp_path, hf_folder):
  read = safetensors_io.read(str(hf_folder / "model.safetensors"))
  tensors = {n: read.array(n) for n in read.shapes if n != "vit.layernorm.bias"}
  tensors["vit.pooler.dense.bias"] = np.zeros(192, np.float32)
  (tmp_path / "vit").mkdir()
  safetensors_io.write(str(tmp_path / "vit" / "model.safetensors"), {k: v.shape for k, v in tensors.items()},
                       tensors.items(), {"format": "pt"})
  (tmp_path / "vit" / "config.json").write_text((hf_folder / "config.json").read_text())
  message = _refused(tmp_path, "--from=hf", f"--input={tmp_path / 'vit'}", *SMALL, HF_EPSILON)
  assert "1 missing (vit.layernorm.bias); 1 extra (vit.pooler.dense.bias)" in message


def test_a_wrong_dtype_is_named(tmp_path, hf_folder):
  blob = (hf_folder / "model.safetensors").read_bytes()
  length = struct.unpack("<Q", blob[:8])[0]
  header = json.loads(blob[8:8 + length])
  header["classifier.bias"]["dtype"] = "I32"  # the same 4 bytes per value, read as integers
  text = json.dumps(header).encode()
  (tmp_path / "vit").mkdir()
  (tmp_path / "vit" / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + length:])
  (tmp_path / "vit" / "config.json").write_text((hf_folder / "config.json").read_text())
  message = _refused(tmp_path, "--from=hf", f"--input={tmp_path / 'vit'}", *SMALL, HF_EPSILON)
  assert "tensor 'classifier.bias' has dtype I32, but weights must be floating point" in message


def test_a_truncated_file_names_the_first_tensor_past_its_end(tmp_path, hf_folder):
  blob = (hf_folder / "model.safetensors").read_bytes()
  length = struct.unpack("<Q", blob[:8])[0]
  header = json.loads(blob[8:8 + length])
  kept = len(blob) - 100 - 8 - length  # bytes of tensor data left
  first = next(n for n in header if n != "__metadata__" and header[n]["data_offsets"][1] > kept)
  (tmp_path / "vit").mkdir()
  (tmp_path / "vit" / "model.safetensors").write_bytes(blob[:-100])
  (tmp_path / "vit" / "config.json").write_text((hf_folder / "config.json").read_text())
  message = _refused(tmp_path, "--from=hf", f"--input={tmp_path / 'vit'}", *SMALL, HF_EPSILON)
  assert f"tensor {first!r} ends at byte" in message and f"only {kept} bytes of data: it is truncated" in message


def test_a_config_json_of_other_numerics_names_the_override(tmp_path, hf_folder):
  message = _refused(tmp_path, "--from=hf", f"--input={hf_folder}", *SMALL)
  assert "layer_norm_eps=1e-12, but layernorm_epsilon=1e-06 (--gin.vit22b.ViT22BConfig.layernorm_epsilon=1e-12)" \
      in message


def test_a_vit22b_configuration_and_a_pickle_are_refused(tmp_path, hf_folder):
  message = _refused(tmp_path, "--from=hf", f"--input={hf_folder}", "--gin_file=models/vit22b/tiny.gin",
                     "--gin.NUM_CLASSES=10", "--gin.IMAGE_SIZE=32", "--gin.CHANNELS=3")
  assert "parallel_block=True (needs False)" in message and "include models/vit/base.gin" in message
  (tmp_path / "weights.bin").write_bytes(b"\x80\x04")
  assert "not pickled PyTorch files" in _refused(tmp_path, "--from=timm", f"--input={tmp_path / 'weights.bin'}",
                                                 *SMALL)


def test_nothing_is_overwritten(tmp_path, hf_folder):
  flags = ("--from=hf", f"--input={hf_folder}", f"--output={tmp_path / 'run'}", *SMALL, HF_EPSILON)
  assert _convert("import", *flags).returncode == 0
  again = _convert("import", *flags)
  assert again.returncode == 2 and "already holds checkpoints (0)" in again.stderr
  out = ("--to=hf", f"--input={tmp_path / 'run'}", f"--output={tmp_path / 'hf'}", *SMALL, HF_EPSILON)
  assert _convert("export", *out).returncode == 0
  again = _convert("export", *out)
  assert again.returncode == 2 and "already holds model.safetensors, config.json" in again.stderr
  other = _convert("export", "--to=hf", f"--input={tmp_path / 'run'}", f"--output={tmp_path / 'x'}", *SMALL)
  assert other.returncode == 2 and "layernorm_epsilon: checkpoint=1e-12, gin=the default" in other.stderr


# big_vision.

def _big_vision_params(config, pool, seed=0):
  """Random parameters under big_vision/models/vit.py's paths (flax module names, '/'-joined)."""
  rng = np.random.default_rng(seed)
  p, c, e, m, h = config.patch_size, config.channels, config.width, config.mlp_dim, config.num_heads
  d, n = e // h, config.num_patches
  shapes = {"embedding/kernel": (p, p, c, e), "embedding/bias": (e,), "pos_embedding": (1, n, e),
            "Transformer/encoder_norm/scale": (e,), "Transformer/encoder_norm/bias": (e,),
            "head/kernel": (e, config.num_classes), "head/bias": (config.num_classes,)}
  if pool == "tok":
    shapes["cls"] = (1, 1, e)
  for i in range(config.depth):
    block = f"Transformer/encoderblock_{i}"
    for norm in ("LayerNorm_0", "LayerNorm_1"):
      shapes.update({f"{block}/{norm}/scale": (e,), f"{block}/{norm}/bias": (e,)})
    for name in ("query", "key", "value"):
      shapes.update({f"{block}/MultiHeadDotProductAttention_0/{name}/kernel": (e, h, d),
                     f"{block}/MultiHeadDotProductAttention_0/{name}/bias": (h, d)})
    shapes.update({f"{block}/MultiHeadDotProductAttention_0/out/kernel": (h, d, e),
                   f"{block}/MultiHeadDotProductAttention_0/out/bias": (e,),
                   f"{block}/MlpBlock_0/Dense_0/kernel": (e, m), f"{block}/MlpBlock_0/Dense_0/bias": (m,),
                   f"{block}/MlpBlock_0/Dense_1/kernel": (m, e), f"{block}/MlpBlock_0/Dense_1/bias": (e,)})
  return {k: ((1.0 if k.endswith("scale") else 0.0) + 0.05 * rng.standard_normal(s)).astype(np.float32)
          for k, s in shapes.items()}


def _big_vision_logits(params, images, pool, depth):
  """big_vision/models/vit.py's forward pass, transcribed: a strided convolution, positions, ('tok': a class
  token without position), pre-LN blocks with flax's attention and a tanh-GELU MLP, the final LayerNorm, pooling
  and the head. LayerNorm epsilon 1e-6 (flax's default)."""
  def norm(x, prefix):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * params[f"{prefix}/scale"] + params[f"{prefix}/bias"]

  def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  kernel = params["embedding/kernel"]
  x = np.asarray(jax.lax.conv_general_dilated(images, kernel, kernel.shape[:2], "VALID",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")))
  x = x.reshape(x.shape[0], -1, x.shape[-1]) + params["embedding/bias"] + params["pos_embedding"]
  if pool == "tok":
    x = np.concatenate([np.broadcast_to(params["cls"], (x.shape[0], 1, x.shape[-1])), x], axis=1)
  for i in range(depth):
    block = f"Transformer/encoderblock_{i}"
    attention = f"{block}/MultiHeadDotProductAttention_0"
    y = norm(x, f"{block}/LayerNorm_0")
    q, k, v = (np.einsum("bne,ehd->bnhd", y, params[f"{attention}/{n}/kernel"]) + params[f"{attention}/{n}/bias"]
               for n in ("query", "key", "value"))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", weights, v)
    x = x + np.einsum("bqhd,hde->bqe", o, params[f"{attention}/out/kernel"]) + params[f"{attention}/out/bias"]
    y = norm(x, f"{block}/LayerNorm_1")
    y = gelu(y @ params[f"{block}/MlpBlock_0/Dense_0/kernel"] + params[f"{block}/MlpBlock_0/Dense_0/bias"])
    x = x + y @ params[f"{block}/MlpBlock_0/Dense_1/kernel"] + params[f"{block}/MlpBlock_0/Dense_1/bias"]
  x = norm(x, "Transformer/encoder_norm")
  pooled = x[:, 0] if pool == "tok" else x.mean(1)
  return pooled @ params["head/kernel"] + params["head/bias"]


@pytest.mark.parametrize("pool, scanned", [("tok", False), ("gap", True)])
def test_big_vision_npz_matches_its_forward_pass(tmp_path, pool, scanned):
  head = "token" if pool == "tok" else "gap"
  flags = (*SMALL, "--gin.vit22b.ViT22BConfig.gelu_approximate=True", f"--gin.vit22b.ViT22BConfig.head='{head}'")
  model = _model(flags)
  params = _big_vision_params(model.config, pool)
  stored = {f"params/{k}": v for k, v in params.items()}
  if scanned:  # big_vision's scan=True: one 'encoderblock' whose arrays lead with [depth]
    blocks = sorted({k.split("/")[2] for k in stored if "encoderblock_" in k})
    for suffix in {k.split("/", 3)[3] for k in stored if "encoderblock_" in k}:
      stored[f"params/Transformer/encoderblock/{suffix}"] = np.stack(
          [stored.pop(f"params/Transformer/{b}/{suffix}") for b in blocks])
  stored["opt/state/0/mu/head/bias"] = np.zeros(10, np.float32)  # a training checkpoint's optimizer state
  np.savez(tmp_path / "bv.npz", **stored)
  result = _convert("import", "--from=big_vision", f"--input={tmp_path / 'bv.npz'}", f"--output={tmp_path / 'run'}",
                    *flags)
  assert result.returncode == 0, result.stderr
  source = checkpoint_io.CheckpointParams(_model(flags), str(tmp_path / "run"))
  images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
  got = _logits(model, {n: source.read(n) for n in source.shapes}, images)
  want = _big_vision_logits(params, images, pool, model.config.depth)
  print(f"big_vision {pool} (scan={scanned}): max |logits difference| {np.abs(got - want).max():.2e}")
  assert np.abs(want).max() > 0.5 and np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()


def test_big_vision_needs_its_gelu_and_has_no_map_head(tmp_path):
  np.savez(tmp_path / "bv.npz", x=np.zeros(1, np.float32))
  message = _refused(tmp_path, "--from=big_vision", f"--input={tmp_path / 'bv.npz'}", *SMALL,
                     "--gin.vit22b.ViT22BConfig.head='map'")
  assert "gelu_approximate=False (needs True)" in message and "head='map' (needs 'token' or 'gap')" in message
  (tmp_path / "cut.npz").write_bytes((tmp_path / "bv.npz").read_bytes()[:40])
  message = _refused(tmp_path, "--from=big_vision", f"--input={tmp_path / 'cut.npz'}", *SMALL,
                     "--gin.vit22b.ViT22BConfig.gelu_approximate=True")
  assert "is not a readable .npz archive" in message


# Serving.

def _sharded_checkpoint(experiment, model_dir):
  """A checkpoint of `experiment`'s model saved from its mesh (the demo's: fsdp=4 x tensor=2) as training saves
  one, with a random head so that the logits depend on every parameter; returns the model and the parameters."""
  from shardline.training.lifecycle import checkpoints  # pylint: disable=g-import-not-at-top
  from shardline.training.state import run_setup as setup  # pylint: disable=g-import-not-at-top
  from shardline.training.state import train_state  # pylint: disable=g-import-not-at-top
  model = _model((f"--gin_file={experiment}",))
  run = setup.build(model, total_steps=10, global_batch=8)
  state = train_state.init_state(model, run.tx, model.batch_spec(1), run.partitioner, run.state_sharding, seed=4)
  head = np.random.default_rng(4).normal(size=state.params["head_kernel"].shape).astype(np.float32)
  state = state.replace(params=dict(state.params, head_kernel=jax.device_put(
      head, run.state_sharding.params["head_kernel"])))
  saver = checkpoints.Checkpointer(str(model_dir), async_save=False)
  saver.save(3, state, {"fingerprint": model.fingerprint()})
  saver.close()
  assert len(state.params["encoder"]["layers"]["query"].sharding.device_set) == 8
  return model, jax.device_get(state.params)


@pytest.mark.full
def test_any_classifier_serves_at_any_batch_size_in_tensorflow(tmp_path):
  """The demo's tiny ViT-22B (parallel blocks, QK-norm, MAP head), from a checkpoint sharded over 8 devices."""
  experiment = "experiments/vit22b_tiny_digits_cpu8.gin"
  model, params = _sharded_checkpoint(experiment, tmp_path / "run")
  result = _convert("export", "--to=serving", f"--input={tmp_path / 'run'}", f"--output={tmp_path / 'served'}",
                    "--platforms=cpu,cuda", f"--gin_file={experiment}")
  assert result.returncode == 0, result.stderr
  assert "takes image [None, 8, 8, 1] float32 (any batch size) and returns logits [None, 10]" in result.stdout
  serve = serving.load(str(tmp_path / "served"))
  for batch in (3, 5):  # the export traced no batch size: both are new to it
    images = np.random.default_rng(batch).uniform(size=(batch, 8, 8, 1)).astype(np.float32)
    want = np.asarray(model.logits(params, images))
    served = serve(image=images)
    print(f"serving batch {batch}: max |logits difference| {np.abs(served - want).max():.2e}")
    assert served.shape == (batch, 10) and np.abs(want).max() > 0.5
    np.testing.assert_allclose(served, want, rtol=0, atol=1e-4)
