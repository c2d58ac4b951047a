"""The loader's partial JPEG decoder (data/_jpeg_window.c): built by `make test`'s install, its windows are
bit-identical to tf.io.decode_and_crop_jpeg's, at full and reduced scale, for 4:4:4, 4:2:2, 4:2:0, 4:4:0 and 4:1:1
chroma, progressive JPEGs, windows at the image's edges and at every offset within an iMCU; CMYK is handed back;
bad data raises DecodeError and bad arguments ValueError (which the transforms do not swallow); and the
transforms use it unless told to decode whole images."""
import io

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from shardline.core import errors as core_errors
from shardline.data import augment
from shardline.data import image_decode

_jpeg_window = image_decode._jpeg_window  # pylint: disable=protected-access
# Without the extension only test_the_decoder_is_built fails, saying what to install; the rest need it.
needs_decoder = pytest.mark.skipif(_jpeg_window is None, reason="shardline.data._jpeg_window not built")


@pytest.fixture(scope="module")
def tf():
  with core_errors.stderr_silenced():
    import tensorflow  # pylint: disable=g-import-not-at-top
  return tensorflow


def _pixels(height: int, width: int) -> np.ndarray:
  rng = np.random.default_rng([height, width])
  smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).resize((width, height),
                                                                                              Image.BICUBIC))
  return np.clip(smooth + rng.normal(0, 15, smooth.shape), 0, 255).astype(np.uint8)


def _jpeg(height: int, width: int, mode: str = "RGB", **save_options) -> bytes:
  pixels = _pixels(height, width)
  buffer = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90, **save_options)
  return buffer.getvalue()


def _window(data: bytes, top: int, left: int, height: int, width: int, channels: int = 3, divisor: int = 1):
  out = np.empty((height, width + _jpeg_window.MAX_SHIFT, channels), np.uint8)
  shift = _jpeg_window.decode(data, out, top, left, height, width, channels, divisor)
  return None if shift is None else out[:, shift:shift + width]


def test_the_decoder_is_built():
  assert _jpeg_window is not None, (
      "shardline.data._jpeg_window was not built: install libjpeg-turbo's headers (Debian/Ubuntu: "
      "libjpeg62-turbo-dev or libjpeg-turbo8-dev) and reinstall shardline")


def _windows(rng: np.random.Generator, height: int, width: int):
  """Edge and 1-pixel windows, windows starting at every offset within an iMCU, and random ones, all inside."""
  windows = [(0, 0, height, width), (height - 1, width - 1, 1, 1), (0, width - 17, height, 17),
             (height - 13, 0, 13, 40), (17, 3, 1, width - 3)]
  windows += [(3, left, 20, 30) for left in range(0, 33)]
  for _ in range(20):
    h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
    windows.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
  assert all(top + h <= height and left + w <= width for top, left, h, w in windows)
  return windows


@needs_decoder
@pytest.mark.parametrize("subsampling", ["444", "422", "420", "440", "411"])
@pytest.mark.parametrize("progressive", [False, True])
def test_windows_are_bit_identical_to_tensorflows_decode_and_crop(tf, subsampling, progressive):
  """4:1:1 has the widest iMCU (32 pixels), so the largest shift back to its boundary."""
  data = simplejpeg.encode_jpeg(_pixels(203, 317), quality=90, colorsubsampling=subsampling)
  if progressive:
    data = _progressive(data)
  for window in _windows(np.random.default_rng(len(subsampling)), 203, 317):
    for channels in (3, 1):
      expected = tf.io.decode_and_crop_jpeg(data, window, channels=channels).numpy()
      np.testing.assert_array_equal(_window(data, *window, channels=channels), expected, err_msg=str(window))


def _progressive(data: bytes) -> bytes:
  """The same JPEG re-encoded progressive by Pillow (keeping its subsampling and quantisation)."""
  buffer = io.BytesIO()
  Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality="keep", subsampling="keep", progressive=True)
  return buffer.getvalue()


@needs_decoder
def test_stray_bytes_between_markers_decode_to_tensorflows_pixels(tf):
  data = _jpeg(64, 80)
  start_of_scan = data.index(b"\xff\xda")
  stray = data[:start_of_scan] + b"\x00\x07" + data[start_of_scan:]
  np.testing.assert_array_equal(_window(stray, 0, 0, 64, 80), tf.io.decode_jpeg(stray, channels=3).numpy())
  out = augment.EvalImages(size=64, crop_fraction=1.0)({"image": stray}, None)["image"]  # through the header too
  np.testing.assert_array_equal(out, tf.io.decode_and_crop_jpeg(stray, (0, 8, 64, 64), channels=3).numpy())


@needs_decoder
def test_a_grey_jpeg_decodes_to_grey_and_to_rgb(tf):
  data = _jpeg(64, 80, mode="L")
  for channels in (1, 3):
    expected = tf.io.decode_and_crop_jpeg(data, (5, 9, 40, 50), channels=channels).numpy()
    np.testing.assert_array_equal(_window(data, 5, 9, 40, 50, channels=channels), expected)


@needs_decoder
def test_a_reduced_scale_window_is_tensorflows_reduced_scale_crop(tf):
  data = _jpeg(480, 640)
  for divisor in (2, 4, 8):
    height, width = -(-480 // divisor), -(-640 // divisor)
    for window in _windows(np.random.default_rng(divisor), height, width):
      expected = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=divisor).numpy()
      np.testing.assert_array_equal(_window(data, *window, divisor=divisor), expected, err_msg=str((divisor, window)))


@needs_decoder
def test_cmyk_is_handed_back_and_the_transform_still_decodes_it():
  buffer = io.BytesIO()
  Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(buffer, format="JPEG")
  assert _window(buffer.getvalue(), 0, 0, 30, 40) is None
  out = augment.EvalImages(size=30, crop_fraction=1.0)({"image": buffer.getvalue()}, None)["image"]
  np.testing.assert_allclose(out[0, 0], (245, 55, 225), atol=2)  # Pillow's CMYK -> RGB of the same colour


@needs_decoder
def test_bad_data_raises_decode_error_and_bad_arguments_value_error():
  data = _jpeg(64, 64)
  with pytest.raises(_jpeg_window.DecodeError, match="Premature end of JPEG file"):
    _window(data[:len(data) // 2], 0, 0, 64, 64)
  with pytest.raises(_jpeg_window.DecodeError, match="Not a JPEG file"):
    _window(b"\x89PNG\r\n\x1a\n" + bytes(100), 0, 0, 8, 8)
  assert issubclass(_jpeg_window.DecodeError, ValueError)
  with pytest.raises(ValueError, match=r"window \(60, 0, 8, 8\) outside the 64 x 64 image at 1/1 scale"):
    _window(data, 60, 0, 8, 8)
  with pytest.raises(ValueError, match="outside the 16 x 16 image at 1/4 scale"):
    _window(data, 0, 0, 17, 8, divisor=4)
  with pytest.raises(ValueError, match="out must be"):
    _jpeg_window.decode(data, np.empty((8, 8, 3), np.uint8), 0, 0, 8, 8, 3, 1)
  with pytest.raises(ValueError, match="divisor must be"):
    _window(data, 0, 0, 8, 8, divisor=3)
  with pytest.raises(ValueError, match="at most 65535"):
    _window(data, 0, 0, 8, 70000)
  for bad in (ValueError, TypeError):  # a bad window is the caller's bug, never the data's
    assert not issubclass(bad, _jpeg_window.DecodeError)


@needs_decoder
def test_a_transform_handed_a_bad_window_raises_instead_of_decoding_otherwise(monkeypatch):
  monkeypatch.setattr(image_decode, "_window", lambda box, scale, height, width: (0, 0, height + 5, width))
  with pytest.raises(ValueError, match="outside the"):
    augment.EvalImages(size=16)({"image": _jpeg(40, 40)}, None)


@needs_decoder
def test_the_transforms_decode_the_crop_or_with_partial_decode_false_the_whole_image(tf):
  data = _jpeg(203, 317)
  side = 0.8 * 203  # EvalImages' central crop (one whose edges differ: not every window's do)
  box = ((203 - side) / 2, (317 - side) / 2, side, side)
  y0, x0, y1, x1 = image_decode._window(box, 1, 203, 317)  # pylint: disable=protected-access
  crop = tf.io.decode_and_crop_jpeg(data, (y0, x0, y1 - y0, x1 - x0), channels=3).numpy()
  whole = tf.io.decode_jpeg(data, channels=3).numpy()[y0:y1, x0:x1]
  assert not np.array_equal(crop, whole)  # the crop's edges
  for partial_decode, expected in ((True, crop), (False, whole)):
    transform = augment.EvalImages(size=96, crop_fraction=0.8, partial_decode=partial_decode)  # full scale
    out = transform({"image": data}, None)["image"]
    np.testing.assert_array_equal(out, cv2.resize(expected, (96, 96), interpolation=cv2.INTER_LINEAR))
    assert ("only the crop" in transform.describe()) == partial_decode
