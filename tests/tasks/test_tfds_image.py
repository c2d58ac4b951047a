"""The TFDS image task: reads a dataset this test writes itself, and refuses absent data clearly."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shardline.core.errors import UserError
from shardline.data import augment
from shardline.tasks import tfds_image
from tests import helpers


def _write_tiny_dataset(data_dir, file_format=None):
  rng = np.random.default_rng(0)
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(12, 12, 3)),
                                         "label": tfds.features.ClassLabel(num_classes=3)})
  split = lambda n: tf.data.Dataset.from_tensor_slices({
      "image": rng.integers(0, 255, (n, 12, 12, 3), np.uint8), "label": np.arange(n) % 3})
  tfds.dataset_builders.store_as_tfds_dataset(name="shardline_tiny_images", version="1.0.0", features=features,
                                              split_datasets={"train": split(10), "test": split(4)},
                                              data_dir=str(data_dir), file_format=file_format)


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_reads_a_prepared_dataset_with_images_decoded_by_the_loader(tmp_path, file_format):
  """A TFRecord dataset is prepared into the cache; an ArrayRecord one is read directly, with no cache."""
  _write_tiny_dataset(tmp_path / "tfds", file_format)
  name = tfds_image.tfds_image_classification(tfds_name="shardline_tiny_images", data_dir=str(tmp_path / "tfds"),
                                              task_name=f"tiny_images_{file_format}")
  raw = helpers.read_split(name, "train", tmp_path / "cache")
  assert raw["image"].dtype.kind == "S" and raw["image"][0][:4] == b"\x89PNG"  # still encoded
  examples = helpers.read_split(name, "train", tmp_path / "cache", augment.EvalImages(size=8, channels=1))
  assert examples["image"].shape == (10, 8, 8, 1) and examples["image"].dtype == np.uint8  # to float on device
  assert examples["image"].std() > 10
  assert sorted(set(examples["label"].tolist())) == [0, 1, 2]
  assert (tmp_path / "cache").exists() == (file_format == "tfrecord")


def test_missing_data_directory(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tfds_image.tfds_image_classification(tfds_name="cifar10", data_dir=str(tmp_path / "nope"))


def test_dataset_not_prepared(tmp_path):
  with pytest.raises(UserError, match="tfds build"):
    tfds_image.tfds_image_classification(tfds_name="shardline_absent_dataset", data_dir=str(tmp_path))
