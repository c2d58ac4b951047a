"""The image transforms' decoding: JPEG pixels are TensorFlow's, a large JPEG decoded at a reduced DCT scale gives
the pixels of a full decode, every input form (JPEG, PNG, uint8 and float arrays, grey and colour) is handled, and
a truncated JPEG and bad bytes are named."""
import cv2
import numpy as np
import pytest

from shardline.core import errors as core_errors
from shardline.data import augment
from shardline.data import image_decode


def _photo(size: int) -> np.ndarray:
  """uint8 [size, size, 3]: smooth colour fields (so resampling differences stay small)."""
  coarse = np.random.default_rng(0).integers(0, 256, (6, 6, 3)).astype(np.uint8)
  return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _encoded(image: np.ndarray, extension: str) -> bytes:
  ok, data = cv2.imencode(extension, image[..., ::-1])  # OpenCV encodes BGR
  assert ok
  return data.tobytes()


def test_jpeg_pixels_are_bit_identical_to_tensorflows_decode():
  """big_vision decodes with tf.io.decode_jpeg (libjpeg-turbo's fast integer DCT); the workers' decode is the same."""
  with core_errors.stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  textured = np.clip(_photo(48) + np.random.default_rng(1).normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
  jpeg = _encoded(textured, ".jpg")
  for channels in (3, 1):
    ours = augment.EvalImages(size=48, channels=channels, crop_fraction=1.0)({"image": jpeg}, None)["image"]
    np.testing.assert_array_equal(ours, tf.io.decode_jpeg(jpeg, channels=channels).numpy())


def test_a_truncated_jpeg_is_refused_and_stray_bytes_are_not():
  """As tf.io.decode_jpeg: a truncated image is an error, stray bytes between markers only a warning. On the
  whole-image path simplejpeg refuses those and OpenCV decodes them (the partial decoder's own test:
  test_jpeg_window.py)."""
  jpeg = _encoded(_photo(64), ".jpg")
  for partial_decode in (True, False):
    with pytest.raises(ValueError, match="libjpeg-turbo: Premature end of JPEG file"):
      augment.EvalImages(size=64, partial_decode=partial_decode)({"image": jpeg[:len(jpeg) * 2 // 3]}, None)
  whole = augment.EvalImages(size=64, crop_fraction=1.0, partial_decode=False)({"image": _stray(jpeg)}, None)["image"]
  np.testing.assert_array_equal(whole, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB))


def _stray(jpeg: bytes) -> bytes:
  """The JPEG with two stray bytes before its start-of-scan marker (libjpeg warns of extraneous bytes)."""
  start_of_scan = jpeg.index(b"\xff\xda")
  return jpeg[:start_of_scan] + b"\x00\x07" + jpeg[start_of_scan:]


def test_a_central_crop_fraction_outside_0_1_is_refused():
  for fraction in (0.0, 1.2):
    with pytest.raises(ValueError, match=r"crop_fraction is .*; it is the central crop's share"):
      augment.EvalImages(crop_fraction=fraction)


def test_a_large_jpeg_decoded_at_a_reduced_scale_matches_a_full_decode():
  photo = _photo(1024)
  jpeg = _encoded(photo, ".jpg")
  image = image_decode.Image(jpeg, 3)
  assert (image.height, image.width) == (1024, 1024) and image.pixels is None  # the header only
  out = augment.EvalImages(size=64, crop_fraction=0.5)({"image": jpeg}, np.random.default_rng(0))["image"]
  # the central 512 x 512 at 1/8 scale is 64 x 64: decoded at 1/8, then an identity resize
  full = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)[256:768, 256:768]
  expected = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  assert np.abs(out.astype(float) - expected).mean() < 2.0  # RGB, as the full decode (a swap would be ~35)
  grey = augment.EvalImages(size=64, channels=1, crop_fraction=0.5)({"image": jpeg}, None)["image"]
  full_grey = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)[256:768, 256:768]
  expected_grey = cv2.resize(full_grey, (64, 64), interpolation=cv2.INTER_AREA)[..., None]
  assert grey.shape == (64, 64, 1) and np.abs(grey.astype(float) - expected_grey).mean() < 2.0


@pytest.mark.parametrize("form", ["jpeg", "png", "uint8", "float"])
def test_every_input_form_gives_uint8_in_the_asked_channels(form):
  photo = _photo(40)
  image = {"jpeg": lambda: _encoded(photo, ".jpg"), "png": lambda: np.frombuffer(_encoded(photo, ".png"), np.uint8),
           "uint8": lambda: photo, "float": lambda: photo / 255.0}[form]()
  for channels in (1, 3):
    out = augment.TrainImages(size=16, channels=channels)({"image": image}, np.random.default_rng(1))["image"]
    assert out.shape == (16, 16, channels) and out.dtype == np.uint8 and out.std() > 0
  exact = augment.EvalImages(size=40, crop_fraction=1.0)({"image": image}, None)["image"]
  if form in ("png", "uint8", "float"):  # lossless: the image itself
    np.testing.assert_array_equal(exact, photo)


def test_bytes_that_are_not_an_image_are_named():
  with pytest.raises(ValueError, match=r"12 bytes that are not a JPEG or PNG image OpenCV can decode \(they start "
                                       r"b'not an i'\)"):
    augment.EvalImages(size=8)({"image": b"not an image"}, None)
