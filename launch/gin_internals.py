"""The one place shardline reaches into gin-config's private symbols (gin-config 0.5), for what gin has no
public API for. tests/launch/test_gin_internals.py checks each function against the installed gin.

- Listing the registered configurables and a configurable's parameters (for "did you mean" hints).
- Listing the bindings still set to %gin.REQUIRED, all at once (gin reports them one by one, at call time).
- Unbinding parameters that refer to configurables skipped on a machine without the data libraries.
- Knowing whether a folder is already a search path (gin appends duplicates).
- Letting a plain folder named like an include ('runs/') not break gin's lookup of package resources.
"""
import inspect
from typing import List, Sequence

import gin
from gin import config as gin_config_lib
from gin import resource_reader


def _in_python_package(config_path: str) -> bool:
  try:
    return resource_reader.system_path_file_exists(config_path)
  except TypeError:  # a plain folder imported as a namespace package: it has no file location
    return False


def tolerate_plain_folders_named_like_includes() -> None:
  """gin also looks for an include such as 'runs/train.gin' inside a Python package named 'runs'. Under
  `python -m`, the current directory is on sys.path, and a plain folder there with that name (`make demo` writes
  runs/) imports as a namespace package with no file location: gin's lookup then fails with a TypeError instead
  of trying the next place. Such a lookup now counts as "not there". Idempotent."""
  readers = gin_config_lib._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if exists is resource_reader.system_path_file_exists:
      readers[i] = (reader, _in_python_package)


def registered_names() -> List[str]:
  """Every name a gin file may use for a registered configurable: each dotted suffix of its selector."""
  names = set()
  for selector, _ in gin_config_lib._REGISTRY.items():  # pylint: disable=protected-access
    parts = selector.split(".")
    names.update(".".join(parts[i:]) for i in range(len(parts)))
  return sorted(n for n in names if not n.startswith("gin."))


def parameters_of(selector: str) -> List[str]:
  """The parameter names of the configurable `selector` names; [] when there is none."""
  try:
    configurable = gin_config_lib._REGISTRY.get_match(selector)  # pylint: disable=protected-access
  except (KeyError, ValueError):
    return []
  if configurable is None:
    return []
  try:
    fn = configurable.wrapped
    fn = fn.__init__ if inspect.isclass(fn) else fn
    return [p for p in inspect.signature(fn).parameters if p != "self"]
  except (TypeError, ValueError):
    return []


def unset_required() -> List[str]:
  """Every binding still set to `%gin.REQUIRED`, as 'scope/selector.param' strings."""
  missing = []
  for (scope, selector), bindings in gin_config_lib._CONFIG.items():  # pylint: disable=protected-access
    for param, value in bindings.items():
      if isinstance(value, gin_config_lib.ConfigurableReference):
        if value.configurable.wrapped == gin_config_lib._retrieve_constant:  # pylint: disable=protected-access,comparison-with-callable
          if value.scoped_configurable_fn() is gin.REQUIRED:
            missing.append(gin_config_lib._format_binding_key(scope, selector, param))  # pylint: disable=protected-access
  return sorted(missing)


def unbind_references_to(skipped: Sequence[str]) -> List[str]:
  """Binds to None every parameter whose value refers to a skipped configurable (e.g. `TASK = @tasks.x()`);
  returns their binding keys."""
  unbound = []
  for (scope, selector), bindings in list(gin_config_lib._CONFIG.items()):  # pylint: disable=protected-access
    for param, value in list(bindings.items()):
      refs = [v for v in gin_config_lib._iterate_flattened_values(value)  # pylint: disable=protected-access
              if isinstance(v, gin_config_lib._UnknownConfigurableReference)]  # pylint: disable=protected-access
      if any(ref.selector in skipped for ref in refs):
        key = gin_config_lib._format_binding_key(scope, selector, param)  # pylint: disable=protected-access
        gin.bind_parameter(key, None)
        unbound.append(key)
  return unbound


def is_search_path(path: str) -> bool:
  """Whether gin already searches `path` for config files."""
  return path in gin_config_lib._LOCATION_PREFIXES  # pylint: disable=protected-access
