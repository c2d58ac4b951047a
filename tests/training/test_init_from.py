"""train.init_from and frozen parameters: the mapping rules, a fine-tune at a new resolution and class count on
another mesh, a linear probe that trains only the head, and which start wins when MODEL_DIR has checkpoints."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shardline.core.errors import UserError
from shardline.launch import gin_config
from shardline.launch import plan as plan_cli
from shardline.models.base import TransferRules
from shardline.training.lifecycle import checkpoints
from shardline.training.state import frozen as frozen_lib
from shardline.training.transfer import init_from
from shardline.training.transfer import param_mapping
from shardline.training.state import run_setup as setup
from shardline.training.state import train_state
from tests import helpers

# One worker runs this module, so its module-scoped run is made once (pytest-xdist's loadgroup).
pytestmark = pytest.mark.xdist_group("init_from")

PRETRAIN_STEPS = 6
VIT_RULES = TransferRules(heads=("head_kernel", "head_bias"), position_grids=("pos_embed/embedding",))
# The tiny ViT pretrained on 8x8 digits, fine-tuned on 16x16 images of 3 classes on an fsdp=8 mesh.
FINE_TUNE = ("--gin_file=experiments/vit22b_tiny_digits_cpu8.gin", "--gin_file=tasks/tfds_image.gin",
             "--gin.tasks.tfds_image_classification.tfds_name='shardline_finetune_images'",
             "--gin.NUM_CLASSES=3", "--gin.IMAGE_SIZE=16", "--gin.CHANNELS=1", "--gin.BATCH_SIZE=32",
             "--gin.partitioning.make_mesh.ici_fsdp=8", "--gin.partitioning.make_mesh.ici_tensor=1",
             "--gin.partitioning.rule_set.name='fsdp'",
             # The class is where the bright quadrant is, which crops and flips would blur: train on the
             # evaluation transform (a plain resize), decoded in one worker.
             "--gin.stream.train_transform=@data.eval_images()", "--gin.stream.workers=1")


def test_mapping_copies_renames_skips_resizes_and_zeroes():
  source = {"embed": (4, 8), "pos_embed/embedding": (16, 8), "head_kernel": (8, 10), "old/mlp": (8, 8),
            "extra": (3,)}
  target = {"embed": (4, 8), "pos_embed/embedding": (64, 8), "head_kernel": (8, 3), "new/mlp": (8, 8),
            "adapter": (2,)}
  mapping = param_mapping.plan(source, target, VIT_RULES, dont_load=("adapter",),
                               assignment_map=(("new/(.*)", r"old/\1"),))
  kinds = {name: (a.kind, a.source) for name, a in mapping.actions.items()}
  assert kinds == {"embed": ("load", "embed"), "pos_embed/embedding": ("resize", "pos_embed/embedding"),
                   "head_kernel": ("zeros", None), "new/mlp": ("load", "old/mlp"), "adapter": ("fresh", None)}
  assert mapping.unused == ["extra", "head_kernel"]
  assert mapping.sources() == ["embed", "old/mlp", "pos_embed/embedding"]
  assert "1 resized: pos_embed/embedding" in mapping.summary()


def test_mapping_names_every_missing_and_mismatched_parameter():
  source = {"a": (4, 8), "b": (8,), "pos_embed/embedding": (16, 8)}
  target = {"a": (4, 4), "b": (8,), "c": (2,), "d": (3,), "pos_embed/embedding": (15, 8)}
  with pytest.raises(UserError) as error:
    param_mapping.plan(source, target, VIT_RULES, assignment_map=(("d", "x"),))
  message = str(error.value)
  assert "2 parameters of the model have no counterpart in the checkpoint: c, d (from x)" in message
  assert "a: checkpoint (4, 8), model (4, 4)" in message
  assert "pos_embed/embedding: checkpoint (16, 8)" in message  # 15 positions are no square grid
  assert "dont_load" in message and "assignment_map" in message


def test_a_run_is_named_by_its_model_dir_or_its_checkpoints_folder(tmp_path):
  for given in ("run", "run/", "run/checkpoints", "run/checkpoints/"):
    assert checkpoints.of_run(f"{tmp_path}/{given}", "p").directory == f"{tmp_path}/run/checkpoints", given
  assert not (tmp_path / "run").exists()  # read-only: nothing is created


def test_frozen_patterns_must_match_and_leave_something_to_train():
  params = {"encoder": {"w": jnp.zeros(3)}, "head_kernel": jnp.zeros(2)}
  with pytest.raises(UserError, match="'decoder/.*' match no parameter"):
    frozen_lib.check_patterns(params, ("decoder/.*",))
  with pytest.raises(UserError, match="freezes every parameter"):
    frozen_lib.check_patterns(params, (".*",))
  assert frozen_lib.count(params, ("encoder/.*",)) == (2, 5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """The tiny ViT trained for a few steps on 8x8 digits (10 classes, fsdp=4 x tensor=2)."""
  model_dir = tmp_path_factory.mktemp("pretrained") / "run"
  result = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, PRETRAIN_STEPS))
  assert result.returncode == 0, result.stderr[-2000:]
  return model_dir


@pytest.fixture(scope="module")
def images_16px(tmp_path_factory):
  """A TFDS dataset of 16x16 grayscale images in 3 classes (a bright quadrant names the class)."""
  data_dir = tmp_path_factory.mktemp("tfds")
  rng = np.random.default_rng(0)

  def split(n):
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 16, 16, 1), np.uint8)
    for i, label in enumerate(labels):
      images[i, (label // 2) * 8:(label // 2) * 8 + 8, (label % 2) * 8:(label % 2) * 8 + 8] += 150
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(16, 16, 1)),
                                         "label": tfds.features.ClassLabel(num_classes=3)})
  tfds.dataset_builders.store_as_tfds_dataset(name="shardline_finetune_images", version="1.0.0", features=features,
                                              split_datasets={"train": split(192), "test": split(96)},
                                              data_dir=str(data_dir))
  return data_dir


def _fine_tune_args(model_dir, data_dir, steps, *extra):
  return ("train", *FINE_TUNE, f"--gin.tasks.tfds_image_classification.data_dir='{data_dir}'",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={steps}", "--gin.train.log_every=5",
          f"--gin.train.eval_every={steps}", f"--gin.train.checkpoint_every={steps}", *extra)


@pytest.mark.full
def test_loaded_values_are_copied_resized_and_zeroed_on_another_mesh(pretrained, images_16px):
  gin_config.parse(["experiments/vit22b_tiny_digits_cpu8.gin", "tasks/tfds_image.gin"],
                   [a[len("--gin."):] for a in FINE_TUNE if a.startswith("--gin.")]
                   + [f"tasks.tfds_image_classification.data_dir='{images_16px}'", "MODEL_DIR='unused'"])
  model = plan_cli.plan_run().model
  run = setup.build(model, total_steps=10, global_batch=32)
  fresh = train_state.init_state(model, run.tx, model.batch_spec(1), run.partitioner, run.state_sharding)
  source = init_from.prepare(init_from.InitFrom(path=str(pretrained)), run)
  state = source.load(run, fresh)
  saved = checkpoints.Checkpointer(str(pretrained), read_only=True)
  meta = saved.state_metadata(PRETRAIN_STEPS)["params"]
  whole = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=run.partitioner.replicated()),
                       meta, is_leaf=lambda x: hasattr(x, "shape"))
  old = saved.restore_parts(PRETRAIN_STEPS, {"params": whole})["params"]

  assert run.partitioner.mesh.shape["fsdp"] == 8  # saved on fsdp=4 x tensor=2
  np.testing.assert_array_equal(state.params["encoder"]["layers"]["query"], old["encoder"]["layers"]["query"])
  assert state.params["head_kernel"].shape == (64, 3) and not np.any(state.params["head_kernel"])
  table = np.asarray(state.params["pos_embed"]["embedding"])
  assert table.shape == (64, 64)  # a 4x4 patch grid became 8x8
  expected = jax.image.resize(np.asarray(old["pos_embed"]["embedding"]).reshape(4, 4, 64), (8, 8, 64), "bilinear")
  np.testing.assert_allclose(table, np.asarray(expected).reshape(64, 64), rtol=1e-6)
  assert math.isclose(float(table.mean()), float(np.asarray(old["pos_embed"]["embedding"]).mean()), rel_tol=0.1)

  # A model whose parameters are another dtype gets them cast on read (what load asks orbax for).
  query = whole["encoder"]["layers"]["query"]
  as_bfloat16 = saved.restore_parts(PRETRAIN_STEPS, {"params": {"encoder": {"layers": {"query": jax.ShapeDtypeStruct(
      query.shape, jnp.bfloat16, sharding=query.sharding)}}}})["params"]["encoder"]["layers"]["query"]
  assert as_bfloat16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(as_bfloat16, np.asarray(old["encoder"]["layers"]["query"]).astype(jnp.bfloat16))


@pytest.mark.full
def test_fine_tune_at_a_new_resolution_and_class_count_then_resume(tmp_path, pretrained, images_16px):
  model_dir = tmp_path / "fine_tune"
  start = ("--gin.train.init_from=@init_from()", f"--gin.init_from.path='{pretrained}'")
  first = helpers.run_cli_in_process(*_fine_tune_args(model_dir, images_16px, 30, *start))
  assert first.returncode == 0, first.stderr[-3000:]
  assert (f"Initialised from {pretrained}/checkpoints step {PRETRAIN_STEPS}: 25 copied; 1 resized: "
          "pos_embed/embedding; 2 zero-initialised (shape changed): head_bias, head_kernel") in first.stdout
  accuracy = float(first.stdout.split("step 30 | eval_accuracy ")[1].split("%")[0])
  assert accuracy > 60, first.stdout[-2000:]  # 3 classes: chance is 33%

  again = helpers.run_cli_in_process(*_fine_tune_args(model_dir, images_16px, 32, *start))
  assert again.returncode == 0, again.stderr[-3000:]
  assert ("Resuming from checkpoint step 30" in again.stdout
          and "train.init_from is not used: this MODEL_DIR has its own checkpoints" in again.stdout)
  assert "Initialised from" not in again.stdout


@pytest.mark.full
def test_linear_probe_trains_only_the_head_and_keeps_no_optimizer_state_for_the_rest(tmp_path, pretrained):
  model_dir = tmp_path / "probe"
  result = helpers.run_cli_in_process(*helpers.tiny_train_args(
      model_dir, 4, "--gin.train.init_from=@init_from()", f"--gin.init_from.path='{pretrained}'",
      "--gin.init_from.dont_load=('head_.*',)", "--gin.optimizer.make_optimizer.frozen=('(?!head_).*',)"))
  assert result.returncode == 0, result.stderr[-3000:]
  head = 64 * 10 + 10
  assert f"trainable {head:,} of " in result.stdout and f"trainable {head:,} params" in result.stdout
  rows = [json.loads(line) for line in (model_dir / "metrics" / "train.jsonl").read_text().splitlines()]
  assert all(row["trainable_parameters"] == head for row in rows)

  probe, source = (checkpoints.Checkpointer(str(d), read_only=True) for d in (model_dir, pretrained))
  probe_meta = probe.state_metadata(4)
  optimizer_floats = sum(math.prod(m.shape) for m in jax.tree.leaves(
      probe_meta["opt_state"], is_leaf=lambda x: hasattr(x, "shape")) if m.dtype == np.float32)
  assert optimizer_floats == 2 * head  # Adam's two moments of the head, nothing for the frozen encoder
  replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",)),
                                          jax.sharding.PartitionSpec())
  read = lambda c, step: c.restore_parts(step, {"params": jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated), c.state_metadata(step)["params"],
      is_leaf=lambda x: hasattr(x, "shape"))})["params"]
  after, before = read(probe, 4), read(source, PRETRAIN_STEPS)
  for name in ("encoder", "patch_embed", "pos_embed", "map_head", "encoder_norm"):
    jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
  assert np.any(after["head_kernel"])  # the head trained from zeros
