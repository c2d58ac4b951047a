"""T5X-style gin handling: --gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths.

The package's own gin/ folder is always searched, so `--gin_file=experiments/x.gin` works from anywhere.
Every problem stops before any compute with a `UserError` that says what is wrong and how to fix it: unknown
configurables and parameters come with close matches, all missing `%gin.REQUIRED` values are listed at once,
and an unquoted string in a `--gin.` flag is named as such.
"""
import contextlib
import difflib
import fnmatch
import inspect
import logging
import os
import re
from typing import Iterable, List, Sequence

import gin
from gin import config as gin_config_lib
from gin import resource_reader

from shardline.launch import registry
from shardline.core.errors import UserError

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def _in_python_package(config_path: str) -> bool:
  try:
    return resource_reader.system_path_file_exists(config_path)
  except TypeError:  # a plain folder imported as a namespace package: it has no file location
    return False


def _tolerate_plain_folders_named_like_includes() -> None:
  """gin also looks for an include such as 'runs/train.gin' inside a Python package named 'runs'. Under
  `python -m`, the current directory is on sys.path, and a plain folder there with that name (`make demo` writes
  runs/) imports as a namespace package with no file location: gin's lookup then fails with a TypeError instead
  of trying the next place. Such a lookup now counts as "not there" (gin-config 0.5)."""
  readers = gin_config_lib._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if exists is resource_reader.system_path_file_exists:
      readers[i] = (reader, _in_python_package)


_tolerate_plain_folders_named_like_includes()


def override_to_binding(flag_value: str) -> str:
  """'NAME=VALUE' (from --gin.NAME=VALUE) -> 'NAME = VALUE', refusing unquoted strings."""
  if "=" not in flag_value:
    raise UserError(f"--gin.{flag_value} has no '='; write --gin.NAME=VALUE.")
  name, value = flag_value.split("=", 1)
  name, value = name.strip(), value.strip()
  try:
    gin_config_lib.parse_value(value)
  except (SyntaxError, ValueError) as e:
    if re.fullmatch(r"[^'\"@%\[\]{}()]+", value):
      raise UserError(
          f"--gin.{name}={value}: the value {value!r} is not a gin literal. Strings must be quoted inside the "
          f"flag, and the shell eats one level of quotes, so write --gin.{name}=\"'{value}'\".") from e
    if "No configurable matching reference" not in str(e):
      raise UserError(f"--gin.{name}={value}: cannot parse the value ({e}).") from e
    # A reference to a configurable whose module is not imported yet: `parse` imports them all and judges it.
  return f"{name} = {value}"


def _registered_names() -> List[str]:
  """Every name a gin file may use for a registered configurable: each dotted suffix of its selector."""
  names = set()
  for selector, _ in gin_config_lib._REGISTRY.items():  # pylint: disable=protected-access
    parts = selector.split(".")
    names.update(".".join(parts[i:]) for i in range(len(parts)))
  return sorted(n for n in names if not n.startswith("gin."))


def _parameters_of(selector: str) -> List[str]:
  try:
    configurable = gin_config_lib._REGISTRY.get_match(selector)
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


def _explain(error: Exception) -> UserError:
  message = str(error)
  first = message.splitlines()[0]
  location = ": ".join(line.strip() for line in message.splitlines()[1:3])
  where = f" ({location})" if location else ""
  unknown = re.match(r"No configurable matching '@?([^']+)'", first)
  if unknown:
    name = unknown.group(1)
    close = difflib.get_close_matches(name, _registered_names(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else " Check the spelling, or import its module."
    return UserError(f"gin: no configurable named {name!r}{where}.{hint}")
  param = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", first)
  if param:
    selector, name = param.groups()
    params = _parameters_of(selector)
    close = difflib.get_close_matches(name, params, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UserError(f"gin: {selector} has no parameter {name!r}{where}.{hint} Its parameters are: "
                     f"{', '.join(params)}.")
  if "Unable to open file" in first or "No such file" in first:
    return UserError(f"gin: {first}. shardline searches the current directory, --gin_search_paths and the "
                     f"package's gin folder ({GIN_DIR}); give a path relative to one of them.")
  if isinstance(error, SyntaxError):
    loc = error.args[1] if len(error.args) > 1 else None
    at = (f" at {loc.filename or 'the bindings'}:{loc.line_num}: {loc.line_content.strip()}"
          if hasattr(loc, "line_num") else "")
    return UserError(f"gin: syntax error{at} ({error.args[0].splitlines()[0] if error.args else first}). "
                     "Strings need quotes, references need @ and macros need %.")
  return UserError(f"gin: {first}{where}")


def missing_required() -> List[str]:
  """Every binding still set to `%gin.REQUIRED`, as 'scope/selector.param' strings."""
  missing = []
  for (scope, selector), bindings in gin_config_lib._CONFIG.items():
    for param, value in bindings.items():
      if isinstance(value, gin_config_lib.ConfigurableReference):
        if value.configurable.wrapped == gin_config_lib._retrieve_constant:  # pylint: disable=comparison-with-callable
          if value.scoped_configurable_fn() is gin.REQUIRED:
            missing.append(gin_config_lib._format_binding_key(scope, selector, param))
  return sorted(missing)


def _macro_name(binding_key: str) -> str:
  """'MODEL_DIR/macro.value' -> 'MODEL_DIR'; other binding keys unchanged."""
  return binding_key.split("/")[0] if binding_key.endswith("/macro.value") else binding_key


class _DropSearchMisses(logging.Filter):
  """gin logs an ERROR for every search path that lacks an included file; only real failures matter."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("Path not found:")


@contextlib.contextmanager
def _quiet_search():
  quiet = _DropSearchMisses()
  handlers = logging.getLogger().handlers
  for h in handlers:
    h.addFilter(quiet)
  logging.getLogger().addFilter(quiet)
  try:
    yield
  finally:
    logging.getLogger().removeFilter(quiet)
    for h in handlers:
      h.removeFilter(quiet)


def _unbind_references_to(skipped: Sequence[str]) -> None:
  """Binds to None every parameter whose value refers to a skipped configurable (e.g. `TASK = @tasks.x()`)."""
  for (scope, selector), bindings in list(gin_config_lib._CONFIG.items()):  # pylint: disable=protected-access
    for param, value in list(bindings.items()):
      refs = [v for v in gin_config_lib._iterate_flattened_values(value)  # pylint: disable=protected-access
              if isinstance(v, gin_config_lib._UnknownConfigurableReference)]  # pylint: disable=protected-access
      if any(ref.selector in skipped for ref in refs):
        key = gin_config_lib._format_binding_key(scope, selector, param)  # pylint: disable=protected-access
        gin.bind_parameter(key, None)


def parse(gin_files: Sequence[str], bindings: Iterable[str] = (), search_paths: Sequence[str] = (),
          finalize: bool = True, allow_missing: Sequence[str] = (),
          allow_missing_data_libraries: bool = False) -> None:
  """Parses gin files and bindings after importing every configurable; raises UserError on any problem.

  `allow_missing` holds fnmatch patterns of required values a command does not use (`shardline plan` needs no
  MODEL_DIR and no data); they are bound to None. With `allow_missing_data_libraries` (benchmarks on synthetic
  batches), modules that need TensorFlow, seqio or ALE are skipped when those are not installed, and bindings
  to exactly their configurables are ignored; any other unknown name is still an error.
  """
  registry.import_all(allow_missing_data_libraries)
  skipped = registry.skipped_configurables()
  gin.clear_config()
  for path in [GIN_DIR, os.getcwd(), *search_paths]:
    if path not in gin_config_lib._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(path)
  if not gin_files:
    raise UserError("No --gin_file given. Pass at least one, e.g. "
                    "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin.")
  try:
    with _quiet_search():
      gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False,
                                          skip_unknown=skipped or False)
  except (ValueError, SyntaxError, IOError, KeyError) as e:
    raise _explain(e) from e
  for key in missing_required():
    if any(fnmatch.fnmatch(_macro_name(key), pattern) for pattern in allow_missing):
      gin.bind_parameter(key, None)
  missing = missing_required()
  if missing:
    listed = "\n  ".join(_macro_name(m) for m in missing)
    raise UserError(f"gin: {len(missing)} required value(s) are not set (%gin.REQUIRED):\n  {listed}\n"
                    "Set each in a gin file or on the command line, e.g. --gin.MODEL_DIR=\"'/path/to/dir'\".")
  if skipped:
    _unbind_references_to(skipped)
  if finalize:
    gin.finalize()
