"""The synthetic image (and image-text) tasks: deterministic examples of the declared shapes, read through the
input layer, with captions in seqio's byte numbering."""
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.data.settings import StreamSettings
from shardline.tasks import splits
from shardline.tasks import synthetic


def test_examples_are_a_function_of_seed_split_and_index():
  name = synthetic.synthetic_images(image_size=6, channels=3, num_classes=5, examples=4, seed=1)
  source = splits.open_source(name, "train", StreamSettings())
  again = splits.open_source(name, "train", StreamSettings())
  assert len(source) == 4 and source.feature_names() == ("image", "label")
  np.testing.assert_array_equal(source[2]["image"], again[2]["image"])
  assert source[2]["image"].shape == (6, 6, 3) and source[2]["image"].dtype == np.float32
  assert not np.array_equal(source[2]["image"], splits.open_source(name, "test", StreamSettings())[2]["image"])
  assert 0 <= int(source[3]["label"]) < 5
  with pytest.raises(UserError, match="no split 'validation'"):
    splits.open_source(name, "validation", StreamSettings())


def test_captions_use_seqios_byte_numbering():
  import seqio  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.ByteVocabulary()
  assert (synthetic.EOS, vocabulary.encode("a")[0] - ord("a")) == (vocabulary.eos_id, synthetic.BYTE_OFFSET)
  name = synthetic.synthetic_image_text(image_size=4, channels=1, text_length=8, num_classes=3, examples=5)
  example = splits.open_source(name, "test", StreamSettings())[1]
  text = example["text"]
  end = int(np.flatnonzero(text == synthetic.EOS)[0])
  assert text.shape == (8,) and (text[end + 1:] == 0).all()
  assert vocabulary.decode(text[:end].tolist()).isalpha()


def test_bad_sizes_are_user_errors():
  with pytest.raises(UserError, match="image_size = 0"):
    synthetic.synthetic_images(image_size=0)
  with pytest.raises(UserError, match="text_length = 1"):
    synthetic.synthetic_image_text(text_length=1)
