"""Shell quoting that stays readable: `--gin.MODEL_DIR="'gs://b/r'"`, not shlex's wall of '"'"'.

`join(argv)` gives a POSIX command line that a shell splits back into exactly `argv`. An argument that needs
quoting is quoted after its `--flag=` prefix, with single quotes when it has none, and double quotes (escaping
\\ " $ and `) when it does.
"""
import re
import shlex
from typing import Sequence

_SAFE = re.compile(r"[\w@%+=:,./~-]+")


def quote(value: str) -> str:
  """One shell word that means `value`."""
  if value and _SAFE.fullmatch(value):
    return value
  if "'" not in value:
    return shlex.quote(value)
  return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def quote_arg(arg: str) -> str:
  """Like quote(), but keeps a leading --flag= outside the quotes."""
  match = re.match(r"(--[\w.\-]+=)(.*)", arg, flags=re.S)
  if match and not _SAFE.fullmatch(arg):
    return match.group(1) + quote(match.group(2))
  return quote(arg)


def join(argv: Sequence[str]) -> str:
  """A command line for `argv`."""
  return " ".join(quote_arg(a) for a in argv)
