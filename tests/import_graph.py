"""shardline's own import graph, read from the sources with `ast` (nothing is imported), for the tests of import
directions and of gin registration."""
import ast
import functools
import os
import subprocess
from typing import Dict, List, Set, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL = ("core", "partitioning", "models", "kernels", "data", "tasks", "training", "launch", "benchmarks")


def module_name(path: str) -> str:
  """'training/loop/trainer.py' -> 'shardline.training.loop.trainer' (a package's __init__ -> the package)."""
  name = "shardline." + path[:-3].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def module_path(module: str) -> str:
  """The source file of a shardline module or package ('' when there is none)."""
  relative = os.path.join(*module.split(".")[1:])
  for candidate in (relative + ".py", os.path.join(relative, "__init__.py")):
    if os.path.isfile(os.path.join(REPO, candidate)):
      return candidate
  return ""


@functools.lru_cache(maxsize=None)
def source_files() -> Tuple[str, ...]:
  """The product's tracked Python files (tests and setup.py aside)."""
  files = subprocess.check_output(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                                  cwd=REPO, text=True).split()
  return tuple(f for f in files if f.split("/")[0] in TOP_LEVEL and os.path.exists(os.path.join(REPO, f)))


def _imported(node: ast.AST, package: str) -> List[str]:
  """The shardline modules an import statement names (for `from a import b`, a.b where b is a module)."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names if alias.name.startswith("shardline.")]
  if not isinstance(node, ast.ImportFrom):
    return []
  base = node.module or ""
  if node.level:  # relative imports
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
  if not base.startswith("shardline."):
    return []
  found = [base]
  for alias in node.names:
    if module_path(f"{base}.{alias.name}"):
      found.append(f"{base}.{alias.name}")
  return found


@functools.lru_cache(maxsize=None)
def imports(module: str, module_level_only: bool) -> Tuple[str, ...]:
  """The shardline modules `module` imports anywhere in its file, or only at module level (what runs when it is
  imported: function bodies excluded)."""
  path = module_path(module)
  if not path:
    return ()
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
  found: List[str] = []

  def visit(node: ast.AST, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if not (module_level_only and nested):
        found.extend(_imported(child, package))
      visit(child, nested)

  visit(tree, False)
  return tuple(dict.fromkeys(found))


def with_parents(module: str) -> List[str]:
  """The module and the packages Python imports before it ('shardline.a.b' -> shardline.a, shardline.a.b)."""
  parts = module.split(".")
  return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def closure(modules) -> Set[str]:
  """Every shardline module that importing `modules` imports."""
  seen: Set[str] = set()
  pending = [m for module in modules for m in with_parents(module)]
  while pending:
    module = pending.pop()
    if module in seen:
      continue
    seen.add(module)
    for imported in imports(module, module_level_only=True):
      pending.extend(with_parents(imported))
  return seen


def edges() -> Dict[str, Set[str]]:
  """module -> the shardline modules its file imports anywhere (function-level imports included)."""
  return {module_name(path): set(imports(module_name(path), module_level_only=False)) for path in source_files()}
