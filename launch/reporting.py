"""How entry points report bad input: one paragraph on stderr, no traceback, a non-zero exit."""
import os
import sys
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


def run_reporting_user_errors(fn: Callable[[], int]) -> int:
  """Runs `fn`; a UserError becomes 'shardline: error: ...' on stderr and exit code 2.

  After a UserError everything shardline opened is closed, so the process ends at once: library threads still
  winding down (TensorStore's, after a damaged checkpoint) would otherwise print tracebacks after the message.
  """
  try:
    return fn()
  except UserError as e:
    print(f"shardline: error: {user_message(e)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(e.exit_code)  # pylint: disable=protected-access
  except KeyboardInterrupt:
    print("shardline: interrupted.", file=sys.stderr)
    return 130
