"""What a set of gin files imports and names, read without binding anything.

shardline registers gin configurables the way T5X does: a gin file imports the modules whose configurables it
binds or references (`import shardline.models.vit22b`), and importing a module registers its configurables.
There is no central list of modules. This module reads gin files (following their includes, through gin's
public parser) to find those imports before gin binds anything, so that on a machine without the data libraries
(TensorFlow, seqio, ALE, ...) the modules that need them can be skipped with one line, and so that a test can
check that every gin file imports what it names.
"""
import ast
import dataclasses
import importlib
import importlib.util
import logging
import os
from typing import List, Sequence, Set, Tuple

from gin import config_parser

from shardline.core.errors import UserError

# Libraries that only feed data, decode images or write summaries: absent on a GPU machine that runs benchmarks
# on synthetic batches. A gin import that fails for one of these is skipped when such a machine is allowed.
DATA_LIBRARIES = ("tensorflow", "seqio", "tensorflow_datasets", "ale_py", "array_record", "grain", "PIL", "cv2",
                  "simplejpeg", "tensorboardX", "sklearn")


class _Recorder(config_parser.ParserDelegate):
  """Records the configurables a gin file references (@name) instead of resolving them."""

  def __init__(self):
    self.references: Set[str] = set()

  def configurable_reference(self, scoped_configurable_name, evaluate):
    self.references.add(scoped_configurable_name.rsplit("/", 1)[-1])
    return None

  def macro(self, macro_name):
    return None


@dataclasses.dataclass
class GinFiles:
  """The statements of gin files and of every file they include.

  Attributes:
    files: the files read, in order (includes before the file that includes them).
    imports: the modules the files import, in order.
    selectors: the configurables bound (`selector.param = ...`) or referenced (`@selector`), scopes dropped.
  """
  files: List[str] = dataclasses.field(default_factory=list)
  imports: List[str] = dataclasses.field(default_factory=list)
  selectors: Set[str] = dataclasses.field(default_factory=set)


def resolve(path: str, search_paths: Sequence[str]) -> str:
  """The file a gin path names: as given, or under the first search path that has it (gin's own order)."""
  for prefix in ("", *search_paths):
    candidate = os.path.join(prefix, path)
    if os.path.isfile(candidate):
      return candidate
  raise UserError(f"gin: cannot find {path!r} in the current directory or in {', '.join(search_paths)}.")


def read(files: Sequence[str], search_paths: Sequence[str], found: GinFiles = None) -> GinFiles:
  """Reads `files` and their includes."""
  found = found if found is not None else GinFiles()
  for name in files:
    path = resolve(name, search_paths)
    if path in found.files:
      continue
    recorder = _Recorder()
    with open(path) as f:
      statements = list(config_parser.ConfigParser(f, recorder))
    for statement in statements:
      if isinstance(statement, config_parser.IncludeStatement):
        read([statement.filename], search_paths, found)
      elif isinstance(statement, config_parser.ImportStatement):
        if statement.module not in found.imports and not statement.module.startswith("__gin__"):
          found.imports.append(statement.module)
      elif isinstance(statement, config_parser.BindingStatement) and statement.arg_name:
        found.selectors.add(statement.selector)
    found.selectors |= recorder.references
    found.files.append(path)
  return found


def import_tolerantly(modules: Sequence[str]) -> Tuple[List[str], List[str]]:
  """Imports `modules`; returns (the modules skipped because a data library is missing, those libraries).

  Any other import error raises as usual.
  """
  skipped, missing = [], []
  for module in modules:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      library = (e.name or "").split(".")[0]
      if library not in DATA_LIBRARIES:
        raise
      skipped.append(module)
      if library not in missing:
        missing.append(library)
  if skipped:
    logging.warning("Without %s, these modules and their gin configurables are skipped (fine for synthetic "
                    "batches): %s", ", ".join(missing), ", ".join(skipped))
  return skipped, missing


def configurables_in(module: str) -> List[str]:
  """The gin names that a module's `@gin.configurable(...)` decorators register, read from its source without
  importing it (its package is imported to find it)."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.origin or not spec.origin.endswith(".py"):
    return []
  with open(spec.origin) as f:
    tree = ast.parse(f.read(), spec.origin)
  names = []
  for node in ast.walk(tree):
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      continue
    for decorator in node.decorator_list:
      call = decorator if isinstance(decorator, ast.Call) else None
      target = call.func if call else decorator
      if not (isinstance(target, ast.Attribute) and target.attr == "configurable"):
        continue
      keywords = {k.arg: k.value for k in (call.keywords if call else [])}
      name_node = call.args[0] if call and call.args else keywords.get("name")
      name = name_node.value if isinstance(name_node, ast.Constant) else node.name
      module_node = keywords.get("module")
      names.append(f"{module_node.value}.{name}" if isinstance(module_node, ast.Constant) else name)
  return names


def shardline_modules_registering(name: str) -> List[str]:
  """The modules of shardline whose source registers a configurable `name` (or one it is a suffix of), found by
  reading every module's source (only when a name is unknown, to say which module a gin file must import)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  found = []
  for folder in ("core", "partitioning", "models", "kernels", "data", "tasks", "training", "launch"):
    for directory, _, files in os.walk(os.path.join(root, folder)):
      for file in files:
        if not file.endswith(".py"):
          continue
        path = os.path.join(directory, file)
        with open(path) as f:
          if "configurable" not in f.read():
            continue
        module = "shardline." + os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        if any(n == name or n.endswith("." + name) for n in configurables_in(module)):
          found.append(module)
  return sorted(found)
