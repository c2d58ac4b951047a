"""How entry points report bad input: one paragraph on stderr, no traceback, a non-zero exit."""
import os
import sys
import traceback
from typing import Callable

from shardline.core.errors import UserError

_GIN_CONTEXT = "  In call to configurable"


def user_message(error: UserError) -> str:
  """The error's text without the call-site lines gin appends."""
  lines = str(error).splitlines()
  kept = []
  for line in lines:
    if line.startswith(_GIN_CONTEXT):
      break
    kept.append(line)
  return "\n".join(kept).strip()


def run_reporting_user_errors(fn: Callable[[], int], verbose: bool = False) -> int:
  """Runs `fn`; a UserError becomes 'shardline: error: ...' on stderr and its exit code (2, or the error's own:
  69 when MODEL_DIR's store stopped answering), with its traceback first when `verbose` (--verbose).

  After a UserError everything shardline opened is closed, so the process ends at once: library threads still
  winding down (TensorStore's, after a damaged checkpoint; orbax's, after a store went away) would otherwise
  print tracebacks after the message, and writers registered to flush at exit would write to a store that is
  gone.
  """
  try:
    return fn()
  except UserError as e:
    if verbose:
      traceback.print_exc()
    print(f"shardline: error: {user_message(e)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(e.exit_code)  # pylint: disable=protected-access
  except KeyboardInterrupt:
    print("shardline: interrupted.", file=sys.stderr)
    return 130
