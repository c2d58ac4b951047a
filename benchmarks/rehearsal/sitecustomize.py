"""Hides Python packages from every interpreter started with this folder on PYTHONPATH, as if not installed.

The CPU rehearsal of the GPU suite (benchmarks/gpu_suite.py --rehearse) puts this folder first on PYTHONPATH and
names the packages the GPU machine lacks in SHARDLINE_HIDE_PACKAGES (comma-separated top-level names). Python
imports `sitecustomize` at start-up, so the packages are hidden in the suite's own process, in every process it
starts and in their grain workers. A hidden package is not found, exactly as on a machine without it:
`import tensorflow` raises ModuleNotFoundError (with `name` set) and `importlib.util.find_spec` returns None.
"""
import os
import sys


class _Hiding:
  """Wraps a finder of sys.meta_path so that it finds nothing of the hidden packages."""

  def __init__(self, finder, hidden):
    self.finder, self.hidden = finder, hidden

  def find_spec(self, name, path=None, target=None):
    """None (not found) for a hidden package or a module inside one; the wrapped finder's answer otherwise."""
    if name.split(".")[0] in self.hidden:
      return None
    return self.finder.find_spec(name, path, target)

  def __getattr__(self, attribute):  # invalidate_caches, find_distributions, ...
    return getattr(self.finder, attribute)


def hide(names) -> None:
  """Hides the packages `names` from every later import in this process."""
  hidden = frozenset(names)
  sys.meta_path[:] = [_Hiding(f, hidden) if hasattr(f, "find_spec") and not isinstance(f, _Hiding) else f
                      for f in sys.meta_path]


if os.environ.get("SHARDLINE_HIDE_PACKAGES"):
  hide(n for n in os.environ["SHARDLINE_HIDE_PACKAGES"].split(",") if n)
