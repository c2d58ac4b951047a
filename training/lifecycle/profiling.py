"""XProf traces of chosen steps: `train.profile.steps = (start, count)`.

The trace covers steps start .. start+count-1, each inside a `StepTraceAnnotation('train', step_num=s)` so the
profile tools show step boundaries. It is written where TensorBoard's profile plugin (the `xprof` package) looks,
MODEL_DIR/plugins/profile/<run>/<host>.xplane.pb:

  tensorboard --logdir MODEL_DIR        (Profile tab)    or    xprof --logdir MODEL_DIR --port 8791

JAX writes the trace to a local folder first; for a gs:// or s3:// MODEL_DIR it is then copied up through the
path layer (JAX's own file layer knows no S3 and no storage emulator). By default only process 0 traces.
"""
import contextlib
import os
from typing import Iterator, Optional, Sequence

import jax

from shardline.core import paths
from shardline.core import scratch
from shardline.core.errors import UserError
from shardline.training.lifecycle import storage

STEP_NAME = "train"


def check_steps(profile_steps: Optional[Sequence[int]], total_steps: int) -> None:
  """Stops on a malformed range or one that ends after the last step."""
  if profile_steps is None:
    return
  if len(profile_steps) != 2 or profile_steps[0] < 0 or profile_steps[1] < 1:
    raise UserError(f"train.profile.steps = {tuple(profile_steps)}; give (first_step, number_of_steps) with "
                    "first_step >= 0 and at least one step, e.g. (10, 5).")
  start, count = profile_steps
  if start + count > total_steps:
    raise UserError(f"train.profile.steps = ({start}, {count}) profiles steps {start}..{start + count - 1}, past "
                    f"the end of training (train.steps = {total_steps}, so the last step is {total_steps - 1}). "
                    f"Start at most at step {max(total_steps - count, 0)} or profile fewer steps.")


class StepProfiler:
  """Starts and stops the trace around the configured steps and publishes it under MODEL_DIR."""

  def __init__(self, model_dir: str, profile_steps: Optional[Sequence[int]], active: bool,
               store: Optional[storage.Store] = None):
    """`store` carries the upload of a trace to a bucket through the run's outage handling."""
    self.model_dir, self._store = model_dir, store or storage.Store(model_dir)
    self.window = tuple(profile_steps) if profile_steps and active else None
    self._local_dir: Optional[str] = None
    self.published: Optional[str] = None

  def _in_window(self, step: int) -> bool:
    return self.window is not None and self.window[0] <= step < self.window[0] + self.window[1]

  def before_step(self, step: int) -> None:
    """Starts tracing at the first profiled step."""
    if self.window is not None and step == self.window[0]:
      self._local_dir = (self.model_dir if not paths.is_remote(self.model_dir)
                         else scratch.make_local_scratch("profile"))
      jax.profiler.start_trace(self._local_dir)

  @contextlib.contextmanager
  def annotate(self, step: int) -> Iterator[None]:
    """Marks step `step` in the trace (a no-op outside the profiled steps)."""
    if self._in_window(step):
      with jax.profiler.StepTraceAnnotation(STEP_NAME, step_num=step):
        yield
    else:
      yield

  def after_step(self, step: int, outputs) -> None:
    """Stops tracing after the last profiled step, once its work has run, and publishes the trace."""
    if self._local_dir is None or step != self.window[0] + self.window[1] - 1:
      return
    jax.block_until_ready(outputs)
    jax.profiler.stop_trace()
    local, self._local_dir = self._local_dir, None
    runs = os.path.join(local, "plugins", "profile")
    newest = max(os.listdir(runs))  # JAX names each trace's run folder by its start time
    if paths.is_remote(self.model_dir):
      self.published = paths.join(self.model_dir, "plugins", "profile", newest)
      self._store.run("uploading the profile", lambda: paths.upload_tree(os.path.join(runs, newest), self.published))
      scratch.remove_local_scratch(local)
    else:
      self.published = os.path.join(runs, newest)
