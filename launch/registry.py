"""Imports every module that registers gin configurables or seqio tasks, so gin files can name them.

On a machine without the data libraries (a GPU box that has JAX but no TensorFlow, seqio or ALE), the modules
that need them are skipped and remembered: `skipped_configurables()` names what they would have registered, so
a benchmark on synthetic batches can still parse the run's gin files.
"""
import ast
import importlib
import logging
import os
from typing import List

CONFIGURABLE_MODULES = (
    "shardline.partitioning.mesh",
    "shardline.partitioning.rules",
    "shardline.models.vit22b.config",
    "shardline.models.vit22b.classifier",
    "shardline.models.limoe.config",
    "shardline.models.limoe.losses",
    "shardline.models.limoe.contrastive",
    "shardline.models.metnet2.config",
    "shardline.models.metnet2.forecaster",
    "shardline.models.mgdt.config",
    "shardline.models.mgdt.agent",
    "shardline.data.sources",
    "shardline.data.augment",
    "shardline.tasks.registry",
    "shardline.tasks.digits",
    "shardline.tasks.tfds_image",
    "shardline.tasks.tfds_image_text",
    "shardline.tasks.precipitation.simulated_task",
    "shardline.tasks.precipitation.zarr_source",
    "shardline.tasks.atari.task",
    "shardline.training.atari_play",
    "shardline.training.optimizer",
    "shardline.training.trainer",
    "shardline.training.evaluate",
    "shardline.training.evaluators",
    "shardline.training.fewshot",
    "shardline.training.infer",
    "shardline.launch.runtime",
    "shardline.launch.plan_inputs",
    "shardline.launch.plan",
    "shardline.launch.data",
)


# Libraries that only feed data; everything else is required.
DATA_LIBRARIES = ("tensorflow", "seqio", "tensorflow_datasets", "ale_py", "array_record", "grain", "PIL")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_skipped: List[str] = []


def import_all(allow_missing_data_libraries: bool = False) -> List[str]:
  """Imports the configurable modules (idempotent); returns the modules skipped for a missing data library.

  Without `allow_missing_data_libraries`, a missing library raises as usual.
  """
  newly_skipped, missing = [], set()
  for name in CONFIGURABLE_MODULES:
    if name in _skipped:
      continue
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      if not allow_missing_data_libraries or (e.name or "").split(".")[0] not in DATA_LIBRARIES:
        raise
      newly_skipped.append(name)
      missing.add(e.name)
  if newly_skipped:
    logging.warning("Without %s, these modules and their gin configurables are skipped (fine for synthetic "
                    "batches): %s", ", ".join(sorted(missing)), ", ".join(newly_skipped))
    _skipped.extend(newly_skipped)
  return list(_skipped)


def _source_path(module: str) -> str:
  """'shardline.tasks.atari.task' -> <repo>/tasks/atari/task.py (setup.py maps each folder to shardline.<folder>)."""
  return os.path.join(_REPO, *module.split(".")[1:]) + ".py"


def _configurable_names(path: str) -> List[str]:
  """The gin names a module's `@gin.configurable(...)` decorators register, read from its source."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = []
  for node in ast.walk(tree):
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      continue
    for deco in node.decorator_list:
      call = deco if isinstance(deco, ast.Call) else None
      target = call.func if call else deco
      if not (isinstance(target, ast.Attribute) and target.attr == "configurable"):
        continue
      kwargs = {k.arg: k.value for k in (call.keywords if call else [])}
      name_node = call.args[0] if call and call.args else kwargs.get("name")
      name = name_node.value if isinstance(name_node, ast.Constant) else node.name
      module_node = kwargs.get("module")
      names.append(f"{module_node.value}.{name}" if isinstance(module_node, ast.Constant) else name)
  return names


def skipped_configurables() -> List[str]:
  """The gin names that the skipped modules would have registered."""
  return sorted({n for module in _skipped for n in _configurable_names(_source_path(module))})
