"""A test-only stand-in for torchvision, so that timm imports where torchvision cannot load.

timm imports torchvision at import time (timm.layers for FrozenBatchNorm2d, timm.data for its transforms and
datasets), but never calls it to build or run a VisionTransformer. The torchvision wheels on the package index
here are CUDA builds that do not load beside the CPU build of torch ("operator torchvision::nms does not exist").
`install()` puts a finder first on sys.meta_path that answers every `torchvision` import with an empty module
whose attributes are placeholder classes; calling one raises ImportError, so a timm code path that really needs
torchvision fails loudly instead of silently doing something else.

Only the test process that imports timm installs it; shardline itself never imports torch, timm or torchvision.
"""
import importlib.abc
import importlib.machinery
import sys
import types


def _placeholder(name: str) -> type:
  """A class that names itself in the error raised when anything tries to use it."""

  def refuse(*args, **kwargs):
    del args, kwargs
    raise ImportError(f"{name} is part of the torchvision stand-in (tests/torchvision_stub.py): the test reached "
                      "timm code that needs the real torchvision.")
  return _PlaceholderMeta(name, (), {"__init__": refuse, "__call__": refuse})


class _PlaceholderMeta(type):
  """Attributes of a placeholder class are placeholders too (torchvision.transforms.InterpolationMode.BILINEAR)."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _placeholder(f"{cls.__name__}.{name}")


class _Module(types.ModuleType):
  """A torchvision module: every attribute is a placeholder class."""

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    value = _placeholder(f"{self.__name__}.{name}")
    setattr(self, name, value)
    return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Answers `torchvision` and every `torchvision.*` import with a `_Module`."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname == "torchvision" or fullname.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _Module(spec.name)
    module.__path__ = []
    module.__version__ = "0.0.0+shardline-test-stub"
    return module

  def exec_module(self, module):
    del module


def install() -> None:
  """Makes `import torchvision...` give the stand-in in this process (idempotent). Call before `import timm`."""
  if "torchvision" in sys.modules and not isinstance(sys.modules["torchvision"], _Module):
    raise RuntimeError("The real torchvision is already imported; the stand-in would not take effect.")
  if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
