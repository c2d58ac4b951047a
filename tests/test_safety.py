"""Safety properties that hold by construction, checked over the source: no pickle is ever loaded, and shardline
itself deletes nothing of its users' (orbax's keep-N pruning inside MODEL_DIR/checkpoints aside, the only deletions
are in core/scratch.py, which removes shardline's own scratch folders and write-check probes and refuses anything
else)."""
import os
import re
import tempfile

import pytest

from shardline.core import scratch
from tests import helpers

PACKAGE_DIRS = ("core", "partitioning", "models", "kernels", "tasks", "training", "launch", "benchmarks")
DELETER = os.path.join("core", "scratch.py")


def _sources():
  for top in PACKAGE_DIRS:
    for root, _, files in os.walk(os.path.join(helpers.REPO, top)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          yield os.path.relpath(path, helpers.REPO), open(path).read()


def test_sources_are_found():
  assert sum(1 for _ in _sources()) > 30


@pytest.mark.parametrize("pattern", [r"\bimport pickle\b", r"\bpickle\.load", r"allow_pickle\s*=\s*True",
                                     r"\bcloudpickle\b", r"\bdill\b"])
def test_no_pickle(pattern):
  offenders = [path for path, text in _sources() if re.search(pattern, text)]
  assert not offenders, offenders


@pytest.mark.parametrize("pattern", [r"\brmtree\(", r"\bos\.remove\(", r"\bos\.unlink\(", r"\.unlink\(",
                                     r"\bos\.rmdir\("])
def test_shardline_deletes_nothing(pattern):
  offenders = [path for path, text in _sources() if re.search(pattern, text) and path != DELETER]
  assert not offenders, offenders


def test_the_one_deleter_refuses_what_is_not_its_own(tmp_path):
  (tmp_path / "mine.txt").write_text("keep")
  for path in (str(tmp_path), os.path.join(tempfile.gettempdir(), "not-shardline"), "/"):
    with pytest.raises(ValueError, match="refusing to delete"):
      scratch.remove_local_scratch(path)
  with pytest.raises(ValueError, match="refusing to delete"):
    scratch.remove_probe(str(tmp_path / "mine.txt"))
  assert (tmp_path / "mine.txt").read_text() == "keep"
  own = scratch.make_local_scratch("test")
  scratch.remove_local_scratch(own)
  assert not os.path.exists(own)
