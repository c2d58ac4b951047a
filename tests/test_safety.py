"""Safety properties that hold by construction, checked over the source: no pickle is ever loaded, and shardline
itself deletes nothing (the only deletions are orbax's keep-N pruning inside MODEL_DIR/checkpoints)."""
import os
import re

import pytest

from tests import helpers

PACKAGE_DIRS = ("partitioning", "models", "kernels", "tasks", "training", "launch", "benchmarks")


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
  offenders = [path for path, text in _sources() if re.search(pattern, text)]
  assert not offenders, offenders
