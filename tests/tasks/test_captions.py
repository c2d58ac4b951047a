"""The image-text tasks: digits captions (deterministic, byte-tokenized) and a prepared TFDS image-text set."""
import numpy as np
import pytest

from shardline.models.limoe import text
from shardline.core.errors import UserError
from shardline.data import augment
from shardline.tasks import digits, digits_captions, tfds_image_text
from tests import fake_data
from tests import helpers


def test_digits_captions_are_deterministic_and_name_the_digit(tmp_path):
  first = helpers.read_split("digits_captions", "test", tmp_path / "a")
  second = helpers.read_split("digits_captions", "test", tmp_path / "b")
  np.testing.assert_array_equal(first["text"], second["text"])
  np.testing.assert_array_equal(first["image"], digits.load_split("test")["image"])
  captions = digits_captions.captions("test")
  assert len(set(captions)) > 10  # several templates
  for i in (0, 1, 2, 50):
    label = int(first["label"][i])
    assert digits_captions.WORDS[label] in captions[i] or str(label) in captions[i]
    assert first["text"][i].tolist() == text.encode(captions[i], digits_captions.TEXT_LENGTH).tolist()


def test_reads_a_prepared_image_text_dataset(tmp_path):
  fake_data.write_image_text(tmp_path)
  name = tfds_image_text.tfds_image_text(tfds_name="shardline_tiny_captions", data_dir=str(tmp_path),
                                         text_length=12)
  stored = helpers.read_split(name, "train", tmp_path / "cache")
  assert stored["image"].dtype.kind == "S" and stored["image"][0].startswith(b"\x89PNG")  # kept encoded
  examples = helpers.read_split(name, "train", tmp_path / "cache", augment.EvalImages(size=8, channels=1,
                                                                                      crop_fraction=1.0))
  assert examples["image"].shape == (6, 8, 8, 1) and examples["image"].dtype == np.uint8
  assert examples["text"].shape == (6, 12) and examples["image"].std() > 10  # the random pixels, resized
  decoded = sorted(bytes(int(t) - 3 for t in row if t >= 3).decode() for row in examples["text"])
  assert decoded == sorted(f"picture {i}" for i in range(6))  # the first caption of each image
  assert set(examples["label"].tolist()) == {-1}


def test_absent_image_text_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(UserError, match="tfds build coco_captions"):
    tfds_image_text.tfds_image_text(tfds_name="coco_captions", data_dir=str(tmp_path))
