"""Decoding images for the loader's transforms (augment.py): shardline's partial JPEG decoder, simplejpeg, OpenCV.

A JPEG crop is decoded alone, as tf.io.decode_and_crop_jpeg decodes it: shardline's libjpeg-turbo extension
(data/_jpeg_window.c) skips the rows above the crop, stops below it, and transforms only the columns over it, with
TensorFlow's settings (fast integer DCT, fancy upsampling), so the pixels equal TensorFlow's. Where that extension
was not built (no libjpeg-turbo headers at install), or for a CMYK JPEG, the whole image is decoded with
simplejpeg with the same settings (tf.io.decode_jpeg's pixels, CMYK aside) and then cropped; along the crop's
edges those pixels can differ from a partial decode's by a few levels, as upsampling there sees the image's
neighbours. A JPEG header is read with simplejpeg in a microsecond. PNGs, and JPEGs that libjpeg-turbo refuses
(a truncated one; on the whole-image path also one with stray bytes between markers, which OpenCV decodes as
TensorFlow does), are decoded with OpenCV. OpenCV also resizes: its bilinear crop-resize to 224 px is 5x faster
than Pillow's, and like tf.image.resize in big_vision's pipeline it does not antialias.

The transforms import this module when they first run, in the loader's workers: a run without image transforms
(a benchmark on synthetic batches, a GPU machine without OpenCV or simplejpeg) never imports these decoders.
"""
from typing import Optional, Tuple

import cv2
import numpy as np
import simplejpeg

try:
  from shardline.data import _jpeg_window  # built by setup.py where libjpeg-turbo's headers are found
  _WindowDecodeError = _jpeg_window.DecodeError
except ImportError:
  _jpeg_window, _WindowDecodeError = None, ()

_FULL = {3: cv2.IMREAD_COLOR_RGB, 1: cv2.IMREAD_GRAYSCALE}
_COLORSPACE = {3: "RGB", 1: "GRAY"}
_DCT_SCALES = (8, 4, 2)  # the reduced scales whose IDCT is as fast as the full one's (not 7/8, 3/8, ...)
cv2.setNumThreads(1)  # OpenCV's own thread pool off: each loader worker is one core's worth of work


def _is_string_array(image) -> bool:
  return isinstance(image, np.ndarray) and image.dtype.kind == "S"


def _is_encoded(image) -> bool:
  return isinstance(image, bytes) or (isinstance(image, np.ndarray) and (  # np.bytes_ is bytes
      _is_string_array(image) or (image.dtype == np.uint8 and image.ndim == 1)))


class Image:
  """An image whose pixels are decoded only when a region of it is asked for, so that a large JPEG can be decoded
  at a reduced scale. `height` and `width` are known up front (from the JPEG header, without decoding)."""

  def __init__(self, image, channels: int, partial_decode: bool = True):
    self.channels, self.partial_decode = channels, partial_decode
    self.encoded, self.pixels = None, None
    if not _is_encoded(image):
      self.pixels = self._converted(np.asarray(image))
    else:
      # bytes and contiguous uint8 buffers are read in place, without a copy
      self.encoded = image.tobytes() if _is_string_array(image) else (
          np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
      try:  # not strict: stray bytes between markers are a warning, as in TensorFlow
        self.height, self.width = simplejpeg.decode_jpeg_header(self.encoded, strict=False)[:2]
      except ValueError:  # not a JPEG
        self.pixels = self._opencv_decode()
    if self.pixels is not None:
      self.height, self.width = self.pixels.shape[:2]

  def _converted(self, image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:  # float in [0, 1]
      image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] != self.channels:
      image = (np.repeat(image, 3, axis=-1) if self.channels == 3
               else image.mean(-1, keepdims=True).round().astype(np.uint8))
    return image

  def _opencv_decode(self, libjpeg_error: str = "") -> np.ndarray:
    data = np.frombuffer(self.encoded, np.uint8)
    pixels = cv2.imdecode(data, _FULL[self.channels] | cv2.IMREAD_IGNORE_ORIENTATION)  # as TF: no EXIF rotation
    if pixels is None:
      raise ValueError(f"{len(data)} bytes that are not a JPEG or PNG image OpenCV can decode (they start "
                       f"{bytes(self.encoded[:8])!r})" + (f"; libjpeg-turbo: {libjpeg_error}" if libjpeg_error else ""))
    return self._converted(pixels)

  def _window_decode(self, window: Tuple[int, int, int, int], divisor: int) -> Optional[np.ndarray]:
    """The window (y0, x0, y1, x1) of the image at 1/divisor scale, decoding only it; None where the window
    decoder is not built or not wanted, or cannot convert the JPEG's colours (CMYK)."""
    if _jpeg_window is None or not self.partial_decode:
      return None
    y0, x0, y1, x1 = window
    out = np.empty((y1 - y0, x1 - x0 + _jpeg_window.MAX_SHIFT, self.channels), np.uint8)
    shift = _jpeg_window.decode(self.encoded, out, y0, x0, y1 - y0, x1 - x0, self.channels, divisor)
    return None if shift is None else out[:, shift:shift + x1 - x0]

  def _jpeg_decode(self, box: Tuple[float, float, float, float], out_size: int) -> np.ndarray:
    """The box's pixels, from a JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives the box at
    least out_size pixels each way (see the module docstring for the decoders)."""
    divisor = next((d for d in _DCT_SCALES if min(box[2], box[3]) >= d * out_size), 1)
    height, width = -(-self.height // divisor), -(-self.width // divisor)  # libjpeg's size at 1/divisor
    window = _window(box, divisor, height, width)
    try:
      pixels = self._window_decode(window, divisor)
    except _WindowDecodeError as e:  # only the data's faults; a bad window is a bug, and raises
      return self._opencv_crop(box, str(e))
    if pixels is None:
      try:
        pixels = simplejpeg.decode_jpeg(self.encoded, colorspace=_COLORSPACE[self.channels], fastdct=True,
                                        min_height=height, min_width=width, min_factor=divisor)
      except ValueError as e:
        return self._opencv_crop(box, str(e))
      pixels = _crop(pixels, window)
    return pixels

  def _opencv_crop(self, box: Tuple[float, float, float, float], libjpeg_error: str) -> np.ndarray:
    pixels = self._opencv_decode(libjpeg_error)
    return _crop(pixels, _window(box, 1, *pixels.shape[:2]))

  def region(self, box: Tuple[float, float, float, float], out_size: int) -> np.ndarray:
    """uint8 [out_size, out_size, channels]: box = (top, left, height, width) in full-size pixels, bilinearly
    resized."""
    if self.pixels is None:
      pixels = self._jpeg_decode(box, out_size)
    else:
      pixels = _crop(self.pixels, _window(box, 1, self.height, self.width))
    out = cv2.resize(pixels, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def describe_jpeg_decoding(partial_decode: bool = True) -> str:
  """How the workers decode JPEGs, for the Data: line."""
  if not partial_decode:
    return "JPEGs: decoded whole (partial_decode=False)"
  if _jpeg_window is not None:
    return "JPEGs: only the crop is decoded (libjpeg-turbo, as tf.io.decode_and_crop_jpeg)"
  return ("JPEGs: decoded whole, as the partial decoder shardline.data._jpeg_window was not built; install "
          "libjpeg-turbo's headers and reinstall shardline for faster loading (BENCHMARKS.md, Input layer)")


def _window(box: Tuple[float, float, float, float], scale: int, height: int, width: int):
  """(y0, x0, y1, x1): box = (top, left, h, w) in full-size pixels, in an image at 1/scale of height x width, at
  least one pixel."""
  top, left, h, w = box
  y0, x0 = min(int(round(top / scale)), height - 1), min(int(round(left / scale)), width - 1)
  y1 = min(max(int(round((top + h) / scale)), y0 + 1), height)
  x1 = min(max(int(round((left + w) / scale)), x0 + 1), width)
  return y0, x0, y1, x1


def _crop(pixels: np.ndarray, window: Tuple[int, int, int, int]) -> np.ndarray:
  y0, x0, y1, x1 = window
  return pixels[y0:y1, x0:x1]


def flip_left_right(pixels: np.ndarray) -> np.ndarray:
  """The image mirrored about its vertical axis, same shape."""
  return cv2.flip(pixels, 1).reshape(pixels.shape)
