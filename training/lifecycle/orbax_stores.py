"""Checkpoints in buckets: routes orbax's s3:// array data to TensorStore's S3 driver, and bounds the retries of
its gs:// and s3:// requests (core/store_clients.py).

orbax-checkpoint 0.12 writes its small files (metadata, commit markers) through etils epath, which handles
s3:// through s3fs, but it builds TensorStore specs for array data itself and knows only gs:// and local
paths: an s3:// directory is normalised to 's3:/bucket/...' and the save fails, or, without OCDBT, the arrays
silently go to a local folder named 's3:'. TensorStore itself has a maintained S3 driver. This module teaches
orbax's three path functions about s3:// (and nothing else; gs:// and local paths are untouched), and checkpoints
in S3 commit with a commit file instead of a directory rename, which S3 does not have.

orbax builds TensorStore's gs:// spec itself, without retry settings, so TensorStore's default applies: 32 retries
up to 32 s apart, 15 minutes for one request to a store that is down. The same patched function adds the bounded
retries to both schemes.

This reaches into orbax's private modules, so `enable()` first checks that they still look as expected and stops
with a clear error if an orbax upgrade changed them. Remove the S3 part once orbax supports s3:// itself.
"""
from typing import Any, Dict

from orbax.checkpoint._src.path import gcs_utils
from orbax.checkpoint._src.serialization import tensorstore_utils

from shardline.core import paths
from shardline.core import store_clients
from shardline.core.errors import UserError

_ORIGINAL = {}


def _normalize_path(path: str) -> str:
  normalized = _ORIGINAL["normalize"](path)
  return "s3://" + normalized[len("s3:/"):] if normalized.startswith("s3:/") and path.startswith("s3://") else normalized


def _use_remote_driver(directory: str) -> bool:
  return directory.startswith("s3://") or _ORIGINAL["use_gcs"](directory)


def _remote_kvstore(path: str) -> Dict[str, Any]:
  if path.startswith("s3://"):
    return paths.tensorstore_kvstore(path)
  return {**_ORIGINAL["gcs_kvstore"](path), **store_clients.tensorstore_options("gs")}


def enable() -> None:
  """Makes orbax write s3:// checkpoints through TensorStore's S3 driver, and bucket checkpoints with bounded
  request retries (idempotent)."""
  if _ORIGINAL:
    return
  needed = {"normalize": (tensorstore_utils, "_normalize_path"), "use_gcs": (tensorstore_utils, "_use_gcs_driver"),
            "gcs_kvstore": (gcs_utils, "get_kvstore_for_gcs")}
  missing = [f"{module.__name__}.{name}" for module, name in needed.values() if not callable(getattr(module, name, None))]
  if missing:
    raise UserError(f"Checkpoints in buckets need shardline's adapter for orbax, which expects {', '.join(missing)}; "
                    "this orbax-checkpoint version no longer has them. Install orbax-checkpoint<0.13 (the range in "
                    "shardline's pyproject.toml), or use a gs:// or local MODEL_DIR.")
  for key, (module, name) in needed.items():
    _ORIGINAL[key] = getattr(module, name)
  tensorstore_utils._normalize_path = _normalize_path  # pylint: disable=protected-access
  tensorstore_utils._use_gcs_driver = _use_remote_driver  # pylint: disable=protected-access
  gcs_utils.get_kvstore_for_gcs = _remote_kvstore
