"""The TFDS image task: reads a dataset this test writes itself, and refuses absent data clearly."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shardline.core.errors import UserError
from shardline.tasks import loader, tfds_image


def _write_tiny_dataset(data_dir):
  rng = np.random.default_rng(0)
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(12, 12, 3)),
                                         "label": tfds.features.ClassLabel(num_classes=3)})
  split = lambda n: tf.data.Dataset.from_tensor_slices({
      "image": rng.integers(0, 255, (n, 12, 12, 3), np.uint8), "label": np.arange(n) % 3})
  tfds.dataset_builders.store_as_tfds_dataset(name="shardline_tiny_images", version="1.0.0", features=features,
                                              split_datasets={"train": split(10), "test": split(4)},
                                              data_dir=str(data_dir))


def test_reads_a_prepared_dataset(tmp_path):
  _write_tiny_dataset(tmp_path)
  name = tfds_image.tfds_image_classification(tfds_name="shardline_tiny_images", data_dir=str(tmp_path),
                                              image_size=8, channels=1)
  examples = loader.materialize(name, "train")
  assert examples["image"].shape == (10, 8, 8, 1) and examples["image"].dtype == np.float32
  assert 0.0 <= examples["image"].min() and examples["image"].max() <= 1.0
  assert sorted(set(examples["label"].tolist())) == [0, 1, 2]


def test_missing_data_directory(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tfds_image.tfds_image_classification(tfds_name="cifar10", data_dir=str(tmp_path / "nope"))


def test_dataset_not_prepared(tmp_path):
  with pytest.raises(UserError, match="tfds build"):
    tfds_image.tfds_image_classification(tfds_name="shardline_absent_dataset", data_dir=str(tmp_path))
