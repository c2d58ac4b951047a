"""T5X-style gin handling: --gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths.

The package's own gin/ folder is always searched, so `--gin_file=experiments/x.gin` works from anywhere.
Every problem stops before any compute with a `UserError` that says what is wrong and how to fix it: unknown
configurables and parameters come with close matches, all missing `%gin.REQUIRED` values are listed at once,
and an unquoted string in a `--gin.` flag is named as such.
"""
import contextlib
import difflib
import fnmatch
import logging
import os
import re
from typing import Iterable, Sequence

import gin
from gin import config as gin_config_lib

from shardline.core.errors import UserError
from shardline.launch import gin_files
from shardline.launch import gin_internals
from shardline.training.loop.settings import RENAMED

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


gin_internals.tolerate_plain_folders_named_like_includes()


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


def _explain(error: Exception) -> UserError:
  message = str(error)
  first = message.splitlines()[0]
  location = ": ".join(line.strip() for line in message.splitlines()[1:3])
  where = f" ({location})" if location else ""
  unknown = re.match(r"No configurable matching (?:reference )?'@?([^'(]+)", first)
  if unknown:
    name = unknown.group(1)
    modules = gin_files.shardline_modules_registering(name)
    if modules:
      return UserError(f"gin: no configurable named {name!r} is registered{where}: it is defined in "
                       f"{' or '.join(modules)}, which no gin file of this run imports. Add `import {modules[0]}` "
                       f"to your gin file, or pass --gin_bindings='import {modules[0]}'.")
    close = difflib.get_close_matches(name, gin_internals.registered_names(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else " Check the spelling, or import its module."
    return UserError(f"gin: no configurable named {name!r}{where}.{hint}")
  param = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", first)
  if param:
    selector, name = param.groups()
    renamed = RENAMED.get(f"{selector.rsplit('.', 1)[-1]}.{name}")
    if renamed:
      return UserError(f"gin: {selector}.{name} was renamed to {renamed} on 2026-12-04, when train's settings were "
                       f"grouped (docs/gin.md lists every rename). Write {renamed} instead{where}.")
    params = gin_internals.parameters_of(selector)
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


def parse(files: Sequence[str], bindings: Iterable[str] = (), search_paths: Sequence[str] = (),
          finalize: bool = True, allow_missing: Sequence[str] = (),
          allow_missing_data_libraries: bool = False) -> None:
  """Parses gin files and bindings; raises UserError on any problem. The files import the modules whose
  configurables they name (gin_files.py).

  `allow_missing` holds fnmatch patterns of required values a command does not use (`shardline plan` needs no
  MODEL_DIR and no data); they are bound to None. With `allow_missing_data_libraries` (benchmarks on synthetic
  batches), modules that need TensorFlow, seqio or ALE are skipped when those are not installed, and bindings
  to exactly their configurables are ignored; any other unknown name is still an error.
  """
  gin.clear_config()
  search = [GIN_DIR, os.getcwd(), *search_paths]
  for path in search:
    if not gin_internals.is_search_path(path):
      gin.add_config_file_search_path(path)
  if not files:
    raise UserError("No --gin_file given. Pass at least one, e.g. "
                    "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin.")
  skipped = []
  if allow_missing_data_libraries:
    modules, _ = gin_files.import_tolerantly(gin_files.read(files, search).imports)
    skipped = sorted({name for module in modules for name in gin_files.configurables_in(module)} | set(modules))
  try:
    with _quiet_search():
      gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False,
                                          skip_unknown=skipped or False)
  except (ValueError, SyntaxError, IOError, KeyError) as e:
    raise _explain(e) from e
  for key in gin_internals.unset_required():
    if any(fnmatch.fnmatch(_macro_name(key), pattern) for pattern in allow_missing):
      gin.bind_parameter(key, None)
  missing = gin_internals.unset_required()
  if missing:
    listed = "\n  ".join(_macro_name(m) for m in missing)
    raise UserError(f"gin: {len(missing)} required value(s) are not set (%gin.REQUIRED):\n  {listed}\n"
                    "Set each in a gin file or on the command line, e.g. --gin.MODEL_DIR=\"'/path/to/dir'\".")
  if skipped:
    gin_internals.unbind_references_to(skipped)
  if finalize:
    gin.finalize()
