"""The profile summariser (training/planning/trace_summary.py) on a real CPU trace written by jax.profiler, and on a
trace of a GPU's layout (device streams beside XProf's derived lines), which only a GPU writes for real."""
import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from shardline.training.planning import trace_summary


@pytest.fixture(scope="module")
def cpu_trace(tmp_path_factory):
  folder = tmp_path_factory.mktemp("trace")
  step = jax.jit(lambda a: jnp.tanh(a @ a).sum())
  x = jnp.ones((256, 256))
  step(x).block_until_ready()
  with jax.profiler.trace(str(folder)):
    for n in range(3):
      with jax.profiler.StepTraceAnnotation("train", step_num=n):
        step(x).block_until_ready()
  return folder


def test_a_cpu_trace_gives_its_ops_per_step(cpu_trace):
  ops, steps, where = trace_summary.read(str(cpu_trace))
  assert steps == 3
  assert ops and all(o.calls >= 3 and o.microseconds > 0 for o in ops)  # every op ran in each step
  assert ops == sorted(ops, key=lambda o: -o.microseconds)
  assert "/host:CPU" in where
  table = trace_summary.summarise(str(cpu_trace))
  assert table.splitlines()[0].startswith(f"# top {min(15, len(ops))} of {len(ops)} XLA ops by time:")
  assert "per step over 3 steps" in table.splitlines()[0]
  shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in table.splitlines()[3:]]
  assert sum(shares) == pytest.approx(100, abs=0.5)


def _event(pid, tid, name, ts, dur, **args):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": args}


def _write(path, events, meta=()):
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": list(meta) + events}, f)
  return str(path)


def test_device_streams_are_read_and_derived_lines_are_not(tmp_path):
  meta = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "pid": 1, "tid": 7, "name": "thread_name", "args": {"name": "Stream #7(Compute)"}},
          {"ph": "M", "pid": 1, "tid": 9, "name": "thread_name", "args": {"name": "XLA Ops"}},
          {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}}]
  events = [_event(1, 7, "sm90_xmma_gemm_bf16", 0, 300, hlo_op="dot.1"),
            _event(1, 7, "sm90_xmma_gemm_bf16", 400, 300, hlo_op="dot.1"),
            _event(1, 7, "loop_fusion", 700, 100, hlo_op="fusion.2"),
            _event(1, 9, "dot.1", 0, 600, hlo_op="dot.1"),  # the same work again, grouped by op
            _event(2, 3, "ThunkExecutor", 0, 5000, hlo_op="dot.1"),  # the host's launch, not device time
            _event(2, 4, "train", 0, 900, step_num="0"), _event(2, 4, "train", 900, 900, step_num="1")]
  path = _write(tmp_path / "gpu.trace.json.gz", events, meta)
  ops, steps, where = trace_summary.read(path)
  assert [(o.op, o.kernel, o.calls, o.microseconds) for o in ops] == [
      ("dot.1", "sm90_xmma_gemm_bf16", 2, 600.0), ("fusion.2", "loop_fusion", 1, 100.0)]
  assert steps == 2 and where == "/device:GPU:0: Stream #7(Compute)"
  assert "| dot.1 | sm90_xmma_gemm_bf16 | 1 | 0.300 | 85.7% |" in trace_summary.summarise(path)


def test_an_op_inside_another_counts_only_for_itself(tmp_path):
  """XLA:CPU traces a `while` op around the ops of its body, on the same thread."""
  events = [_event(5, 1, "while.3", 0, 1000, hlo_op="while.3"),
            _event(5, 1, "fusion.1", 100, 300, hlo_op="fusion.1"),
            _event(5, 1, "dot.2", 150, 100, hlo_op="dot.2"),  # inside fusion.1, inside while.3
            _event(5, 1, "fusion.1", 500, 300, hlo_op="fusion.1"),
            _event(5, 2, "dot.2", 100, 700, hlo_op="dot.2")]  # another thread: not inside anything
  ops, _, _ = trace_summary.read(_write(tmp_path / "cpu.trace.json.gz", events))
  assert {o.op: o.microseconds for o in ops} == {"dot.2": 800.0, "fusion.1": 500.0, "while.3": 400.0}


def test_a_folder_without_a_trace_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="No \\*.trace.json.gz under"):
    trace_summary.read(str(tmp_path))
