"""shardline's own temporary files, and the only deletions in shardline.

shardline deletes nothing of its users' (orbax's keep-N pruning inside MODEL_DIR/checkpoints aside). It does
make local scratch folders (staging for uploads to a bucket, traces before they are copied up) and one probe
object that proves a bucket takes writes; these functions remove exactly those and refuse anything else.
"""
import os
import shutil
import tempfile

from etils import epath

SCRATCH_PREFIX = "shardline-"
PROBE_PREFIX = ".shardline-write-check-"


def make_local_scratch(purpose: str) -> str:
  """A new folder under the system's temporary directory, named shardline-<purpose>-..."""
  return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{purpose}-")


def remove_local_scratch(path: str) -> None:
  """Deletes a folder made by `make_local_scratch`; raises ValueError for any other path."""
  real = os.path.realpath(path)
  if (os.path.dirname(real) != os.path.realpath(tempfile.gettempdir())
      or not os.path.basename(real).startswith(SCRATCH_PREFIX)):
    raise ValueError(f"refusing to delete {path!r}: not a shardline scratch folder")
  shutil.rmtree(real, ignore_errors=True)


def remove_probe(path: str) -> None:
  """Deletes a write-check probe object (local or in a bucket); raises ValueError for any other name."""
  if not os.path.basename(str(path)).startswith(PROBE_PREFIX):
    raise ValueError(f"refusing to delete {path!r}: not a shardline write-check probe")
  epath.Path(path).unlink()
