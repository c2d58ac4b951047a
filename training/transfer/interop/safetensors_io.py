"""The safetensors format (Hugging Face's, which timm writes too): a checked reader and a streaming writer.

A file is an 8-byte little-endian header length n, n bytes of JSON {name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {str: str}}, and then the tensors' bytes, offsets counted from the end of the
header. The format is this simple, so shardline reads and writes it with numpy: the `safetensors` package's numpy
reader cannot return bfloat16 tensors, and its error for a truncated file names no tensor. The tests check both
directions against the package and against the libraries that use it.

The reader checks the whole header before a tensor is read, and a bad file stops with a UserError that names the
offending tensor. The writer streams: it writes the header from the tensors' names and shapes, then each tensor
as it is produced, so an export never holds more than the tensor in hand.
"""
import dataclasses
import json
import struct
from typing import Dict, Iterable, Mapping, Sequence, Tuple

import ml_dtypes
import numpy as np
from etils import epath

from shardline.core.errors import UserError

# The floating dtypes weights may come in; they are read as float32 (every one of them converts exactly).
FLOAT_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
                "BF16": np.dtype(ml_dtypes.bfloat16)}
_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER_BYTES = 100_000_000  # the format's own limit


@dataclasses.dataclass
class TensorFile:
  """A checked safetensors file in memory: every tensor's dtype and shape, and its bytes.

  Attributes:
    path: where it was read from (for messages).
    shapes: tensor name -> shape, in the file's order.
    dtypes: tensor name -> the file's dtype code ('F32', 'BF16', ...).
    metadata: the header's free-form '__metadata__'.
  """
  path: str
  shapes: Dict[str, Tuple[int, ...]]
  dtypes: Dict[str, str]
  metadata: Dict[str, str]
  _data: memoryview
  _offsets: Dict[str, Tuple[int, int]]

  def array(self, name: str) -> np.ndarray:
    """The tensor `name` as float32 (a new array; the file's bytes are not kept alive by it)."""
    begin, end = self._offsets[name]
    raw = np.frombuffer(self._data[begin:end], FLOAT_DTYPES[self.dtypes[name]])
    return raw.astype(np.float32).reshape(self.shapes[name])

  def nbytes(self) -> int:
    """The tensors' bytes."""
    return len(self._data)


def _bad_file(path: str, why: str) -> UserError:
  return UserError(f"{path} is not a readable safetensors file: {why}. Check that it is the model.safetensors that "
                   "Hugging Face's save_pretrained or safetensors' save_file wrote (a partial download or copy is "
                   "cut short), and copy it again.")


def _header(path: str, blob: bytes) -> Tuple[dict, int]:
  """The parsed JSON header and where the tensor bytes start."""
  if len(blob) < 8:
    raise _bad_file(path, f"it has {len(blob)} bytes, fewer than the 8 of the header's length")
  (length,) = struct.unpack("<Q", blob[:8])
  if length > _MAX_HEADER_BYTES:
    raise _bad_file(path, f"its first 8 bytes announce a {length}-byte header, which no safetensors file has (it "
                    "is another format)")
  if 8 + length > len(blob):
    raise _bad_file(path, f"the header announces {length} bytes, but the file ends after {len(blob) - 8}: it is "
                    "truncated")
  try:
    header = json.loads(bytes(blob[8:8 + length]).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad_file(path, f"its header is not JSON ({e})") from e
  if not isinstance(header, dict):
    raise _bad_file(path, "its header is not a JSON object")
  return header, 8 + length


def read(path: str, what: str = "--input") -> TensorFile:
  """Reads and checks a safetensors file (local, gs:// or s3://); a UserError names the first bad tensor: a dtype
  that is not floating point, bytes past the end of a truncated file, or a size that does not fit its shape."""
  source = epath.Path(path)
  if not source.is_file():
    raise UserError(f"{what} = {path}: there is no such file. Give the model.safetensors file, or the folder "
                    "that holds it.")
  blob = source.read_bytes()
  header, start = _header(path, blob)
  metadata = header.pop("__metadata__", {}) or {}
  data = memoryview(blob)[start:]
  shapes, dtypes, offsets = {}, {}, {}
  for name, entry in header.items():
    try:
      dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
    except (TypeError, KeyError, ValueError) as e:
      raise _bad_file(path, f"the header entry of tensor {name!r} is malformed ({entry!r})") from e
    if dtype not in FLOAT_DTYPES:
      raise UserError(f"{path}: tensor {name!r} has dtype {dtype}, but weights must be floating point "
                      f"({', '.join(FLOAT_DTYPES)}). The file is not a checkpoint of model weights, or it was "
                      "quantised; export the weights in floating point and convert that file.")
    if end > len(data):
      raise _bad_file(path, f"tensor {name!r} ends at byte {end} of the data, but the file holds only {len(data)} "
                      "bytes of data: it is truncated")
    if end - begin != int(np.prod(shape)) * _ITEM_BYTES[dtype] or begin < 0:
      raise _bad_file(path, f"tensor {name!r} has {end - begin} bytes for shape {shape} of {dtype}")
    shapes[name], dtypes[name], offsets[name] = shape, dtype, (begin, end)
  return TensorFile(path, shapes, dtypes, dict(metadata), data, offsets)


def write(path: str, shapes: Mapping[str, Sequence[int]], tensors: Iterable[Tuple[str, np.ndarray]],
          metadata: Mapping[str, str]) -> int:
  """Writes float32 tensors as a safetensors file, streaming: the header comes from `shapes` (name -> shape, in
  file order), then each (name, array) of `tensors` is written as it is produced, in the same order. Returns the
  file's size in bytes."""
  header, offset = {}, 0
  for name, shape in shapes.items():
    size = int(np.prod(shape)) * 4
    header[name] = {"dtype": "F32", "shape": [int(d) for d in shape], "data_offsets": [offset, offset + size]}
    offset += size
  text = json.dumps({"__metadata__": dict(metadata), **header}, separators=(",", ":")).encode("utf-8")
  text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned, as the safetensors package writes them
  expected = iter(shapes.items())
  with epath.Path(path).open("wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for name, array in tensors:
      want_name, want_shape = next(expected)
      if name != want_name or tuple(array.shape) != tuple(want_shape):
        raise ValueError(f"safetensors writer: got {name} {array.shape}, expected {want_name} {tuple(want_shape)}.")
      f.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
  if next(expected, None) is not None:
    raise ValueError("safetensors writer: fewer tensors than the header lists.")
  return 8 + len(text) + offset
