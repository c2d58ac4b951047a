"""Looking up seqio tasks by name, with close matches offered for typos."""
import difflib

from shardline.core.errors import UserError
from shardline.tasks.tensorflow_setup import seqio


def get_task(name: str) -> seqio.Task:
  """The seqio Task (or Mixture) registered under `name`; a UserError with close names if there is none."""
  names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
  hint = f" Did you mean: {', '.join(close)}?" if close else ""
  raise UserError(f"Unknown seqio task {name!r}.{hint} Registered tasks: {', '.join(sorted(names))}. "
                  "Set the task with --gin.TASK=\"'<name>'\" or register yours in a module that your gin "
                  "file imports.")
