"""gin registration by import: every gin file, with what it includes, imports the modules of every configurable it
binds or references. Read from the sources (gin/ and the Python files), so a module imported by an earlier test
cannot hide a missing import. There is no central list of modules to keep."""
import glob
import os

import pytest

from shardline.launch import gin_config
from shardline.launch import gin_files
from tests import import_graph

GIN_FILES = sorted(glob.glob(os.path.join(gin_config.GIN_DIR, "**", "*.gin"), recursive=True))


def _configurables():
  """Every configurable's gin name -> the module that registers it."""
  found = {}
  for path in import_graph.source_files():
    with open(os.path.join(import_graph.REPO, path)) as f:
      if "configurable" not in f.read():
        continue
    module = import_graph.module_name(path)
    for name in gin_files.configurables_in(module):
      found[name] = module
  return found


CONFIGURABLES = _configurables()


def _defining_modules(selector: str):
  return {module for name, module in CONFIGURABLES.items() if name == selector or name.endswith("." + selector)}


def test_the_index_knows_the_configurables():
  assert CONFIGURABLES["train"] == "shardline.training.loop.trainer"
  assert CONFIGURABLES["vit22b.ImageClassifier"] == "shardline.models.vit22b.classifier"
  assert CONFIGURABLES["train.checkpointing"] == "shardline.training.loop.settings"


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: os.path.relpath(p, gin_config.GIN_DIR))
def test_every_gin_file_imports_what_it_names(path):
  read = gin_files.read([path], [gin_config.GIN_DIR])
  imported = import_graph.closure(read.imports)
  unknown = sorted(s for s in read.selectors if not _defining_modules(s))
  assert not unknown, f"{path} names configurables that no module registers: {unknown}"
  missing = sorted(f"{selector} (registered by {' or '.join(sorted(_defining_modules(selector)))})"
                   for selector in read.selectors if not _defining_modules(selector) & imported)
  assert not missing, f"{path} (with its includes) does not import the module of: {missing}"


def test_a_file_that_forgets_an_import_is_caught(tmp_path):
  forgetful = tmp_path / "forgetful.gin"
  forgetful.write_text("include 'mesh/cpu8_fsdp8.gin'\nvit22b.ViT22BConfig.depth = 2\n")
  read = gin_files.read([str(forgetful)], [gin_config.GIN_DIR])
  assert "vit22b.ViT22BConfig" in read.selectors
  assert not _defining_modules("vit22b.ViT22BConfig") & import_graph.closure(read.imports)
