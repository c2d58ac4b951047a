"""The ViT-22B pod experiment's ImageNet task, built from a small dataset in TFDS imagenet2012 5.1.0's format
(JPEG images, 1000-class labels, file names; an unlabelled 'test' split with label -1, as TFDS builds it), so a
wrong split or feature name in the gin files fails here."""
import gin
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.launch import gin_config
from shardline.data import augment
from tests import fake_data
from tests import helpers
from shardline.training.evaluation import evaluators

SIZES = fake_data.IMAGENET_SIZES


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  fake_data.write_imagenet(data_dir)
  return data_dir


def test_pod_experiment_trains_on_train_and_evaluates_the_labelled_validation_split(imagenet_dir, tmp_path):
  gin_config.parse(["experiments/vit22b_pod_v4.gin"], [
      f"tasks.tfds_image_classification.data_dir = '{imagenet_dir}'", "MODEL_DIR = 'unused'",
      f"stream.cache_dir = '{tmp_path}'"])
  value = lambda name: gin.query_parameter(name).scoped_configurable_fn()  # a macro or configurable's value
  task = value("train.task")
  assert gin.query_parameter("train.train_split") == "train"
  for name in ("infer.split", "split_eval.split"):
    assert value(name) == "validation", name
  transforms = {"train": value("stream.train_transform"), "validation": value("stream.eval_transform")}
  assert isinstance(transforms["train"], augment.TrainImages) and isinstance(transforms["validation"], augment.EvalImages)
  assert transforms["validation"].crop_fraction == 0.875  # big_vision's ImageNet evaluation crop
  for split in ("train", "validation"):
    examples = helpers.read_split(task, split, tmp_path, transforms[split])
    assert examples["image"].shape == (SIZES[split], 224, 224, 3) and examples["image"].dtype == np.uint8
    assert examples["image"].std() > 10
    assert examples["label"].shape == (SIZES[split],) and (0 <= examples["label"]).all()
  labelled = evaluators.EvalData(task, run=None, batch_size=4)
  evaluators.SplitEval("validation").check(labelled)
  with pytest.raises(UserError, match=r"'test' of task .* is unlabelled: 3 of 3 examples read have label -1"):
    evaluators.SplitEval("test").check(labelled)
