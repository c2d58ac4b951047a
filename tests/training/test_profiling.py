"""train.profile.steps writes an XProf trace under MODEL_DIR/plugins/profile that the xprof package (TensorBoard's
profile plugin) reads back, with one annotated step per profiled step; a range past the end is refused."""
import glob
import json
import os

import pytest

from shardline.core.errors import UserError
from shardline.training.lifecycle import profiling
from tests import helpers


def _steps_in_trace(xplane_path: str):
  from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  data, _ = raw_to_tool_data.xspace_to_tool_data([xplane_path], "trace_viewer", {})
  events = json.loads(data)["traceEvents"]
  return sorted({int(e["args"]["step_num"]) for e in events
                 if e.get("ph") == "X" and e.get("name", "").startswith(f"{profiling.STEP_NAME} ")
                 and "step_num" in e.get("args", {})})


@pytest.mark.full
def test_profile_steps_are_in_the_trace(tmp_path):
  model_dir = tmp_path / "run"
  result = helpers.run_shardline(*helpers.tiny_train_args(model_dir, 5), "--gin.train.profile.steps=(1, 3)")
  assert result.returncode == 0, result.stderr[-3000:]
  traces = glob.glob(str(model_dir / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1, os.listdir(model_dir)
  assert f"Profile of steps 1..3 written to {os.path.dirname(traces[0])}" in result.stdout
  assert "tensorboard --logdir" in result.stdout
  assert _steps_in_trace(traces[0]) == [1, 2, 3]


@pytest.mark.parametrize("steps, message", [((4, 3), "past the end of training"), ((-1, 2), "first_step >= 0"),
                                            ((0, 0), "at least one step"), ((1,), "(first_step, number_of_steps)")])
def test_bad_ranges_are_refused(steps, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
    profiling.check_steps(steps, 6)
