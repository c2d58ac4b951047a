"""The error type for bad user input, and silencing of library noise that would bury it.

A `UserError` carries one paragraph that says what is wrong, where, and how to fix it. The launchers print it
without a traceback and exit non-zero. Programming errors stay ordinary exceptions so that their tracebacks
survive.
"""
import contextlib
import os


class UserError(ValueError):
  """Bad input from the user: a config value, a mesh, a path, a checkpoint or data."""

  exit_code = 2


@contextlib.contextmanager
def stderr_silenced():
  """Redirects file descriptor 2 to /dev/null inside the block.

  For library calls whose C++ side prints what Python cannot catch (TensorFlow's start-up probing, TensorStore
  callbacks racing a closed event loop after a failed read). Python exceptions still propagate and print after.
  """
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
