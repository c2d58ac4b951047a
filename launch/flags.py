"""Command-line flags shared by the entry points: the T5X gin flags."""
import argparse
from typing import List, Sequence, Tuple

from shardline.launch import gin_config
from shardline.core.errors import UserError


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  """--gin_file (repeated), --gin_bindings (repeated), --gin_search_paths; --gin.NAME=VALUE is parsed apart."""
  parser.add_argument("--gin_file", action="append", default=[],
                      help="A gin file; repeat to layer files. Searched in the cwd, --gin_search_paths and "
                           "the package's gin/ folder.")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="A gin binding such as \"train.steps = 100\"; repeatable.")
  parser.add_argument("--gin_search_paths", action="append", default=[],
                      help="Extra folders (comma-separated or repeated) to search for gin files.")
  parser.add_argument("--verbose", action="store_true",
                      help="Print the traceback of an error before its one-paragraph explanation.")


def split_gin_overrides(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
  """Separates --gin.NAME=VALUE overrides (as gin bindings) from the other arguments."""
  rest, bindings = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      bindings.append(gin_config.override_to_binding(arg[len("--gin."):]))
    else:
      rest.append(arg)
  return rest, bindings


def parse_gin(args: argparse.Namespace, overrides: Sequence[str]) -> None:
  """Parses the gin files and bindings named by the flags (bindings first, then overrides)."""
  paths = [p for entry in args.gin_search_paths for p in entry.split(",") if p]
  gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides), paths)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
  """argparse plus --gin.X=Y overrides; unknown flags are a UserError."""
  rest, overrides = split_gin_overrides(argv)
  args, unknown = parser.parse_known_args(rest)
  if unknown:
    raise UserError(f"Unknown arguments: {' '.join(unknown)}. Run with --help for the flags; gin values are set "
                    "with --gin.NAME=VALUE.")
  return args, overrides
