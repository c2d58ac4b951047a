"""The error type for bad user input.

A `UserError` carries one paragraph that says what is wrong, where, and how to fix it. The launchers print it
without a traceback and exit non-zero. Programming errors stay ordinary exceptions so that their tracebacks
survive.
"""


class UserError(ValueError):
  """Bad input from the user: a config value, a mesh, a path, a checkpoint or data."""

  exit_code = 2
