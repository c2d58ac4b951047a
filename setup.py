"""Maps each top-level folder of the repository to the package `shardline.<folder>`, and builds the one C
extension, the loader's partial JPEG decoder (data/_jpeg_window.c).

`shardline` itself is a namespace package, so the repository root needs no `__init__.py`; pyproject.toml holds
everything else. The decoder needs libjpeg-turbo's headers (Debian/Ubuntu: libjpeg-turbo8-dev or
libjpeg62-turbo-dev); without them it is skipped and the loader decodes whole JPEGs instead.
"""
import os

import setuptools

TOP_LEVEL = ("core", "partitioning", "models", "kernels", "data", "tasks", "training", "launch", "gin", "benchmarks")


def _packages():
  packages, package_dir = [], {}
  for top in TOP_LEVEL:
    package_dir[f"shardline.{top}"] = top
    for root, dirs, _ in os.walk(top):
      dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
      packages.append("shardline." + root.replace(os.sep, "."))
  return packages, package_dir


_PACKAGES, _PACKAGE_DIR = _packages()
_JPEG_WINDOW = setuptools.Extension("shardline.data._jpeg_window", ["data/_jpeg_window.c"], libraries=["jpeg"],
                                    optional=True)
setuptools.setup(packages=_PACKAGES, package_dir=_PACKAGE_DIR, ext_modules=[_JPEG_WINDOW])
