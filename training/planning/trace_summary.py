"""The ops a profiled step spent its time in, as a small text table, read from the trace `jax.profiler` writes.

Beside the XProf trace (`<host>.xplane.pb`, which TensorBoard's profile plugin opens) JAX writes the same events
in Chrome's trace-event format, `<host>.trace.json.gz`, in MODEL_DIR/plugins/profile/<run>/ (or under the folder
given to `jax.profiler.trace`). That file needs nothing but gzip and json to read, so the summary works on a
machine without xprof or TensorBoard (the GPU machines). Every event of an XLA op carries its HLO op's name in
`args.hlo_op`; the events are read from the devices' streams (a GPU's kernels) where the trace has devices, and
from the host's threads otherwise (XLA:CPU runs the ops there). An op's time is its events' self time: an event
inside another on the same line (XLA:CPU's ops inside a `while` op's event) counts for itself only, so nothing
is counted twice. The table sums each HLO op's events:

  | op | kernel | calls | ms per step | share |

with the share of the summed op time, and per step when the trace holds `StepTraceAnnotation`s.
"""
import collections
import dataclasses
import glob
import gzip
import json
import os
from typing import Dict, List, Optional, Tuple

# Trace lines that repeat a device's kernels grouped another way (XProf's derived lines), not more work.
DERIVED_LINES = ("XLA Modules", "XLA Ops", "XLA TraceMe", "TensorFlow Ops", "TensorFlow Name Scope", "Framework Ops",
                 "Framework Name Scope", "Source code", "Steps", "Launch Stats", "Host Threads")


@dataclasses.dataclass
class OpTime:
  """The time one HLO op took over the whole trace.

  Attributes:
    op: the HLO op's name (`fusion.12`, `custom-call.3`).
    kernel: the name of its longest event (a GPU kernel, a Triton call, an XLA:CPU thunk).
    calls: its events.
    microseconds: their summed duration.
  """
  op: str
  kernel: str
  calls: int
  microseconds: float


def find_trace(path: str) -> str:
  """The trace-event file at `path`, or the newest one under it (a MODEL_DIR or a `jax.profiler.trace` folder)."""
  if os.path.isfile(path):
    return path
  found = glob.glob(os.path.join(path, "**", "*.trace.json.gz"), recursive=True)
  if not found:
    raise FileNotFoundError(f"No *.trace.json.gz under {path}: was a profile written there (jax.profiler.trace, or "
                            "train.profile.steps)?")
  return max(found, key=os.path.getmtime)


def _names(events, kind: str) -> Dict[Tuple[int, Optional[int]], str]:
  return {(e["pid"], e.get("tid") if kind == "thread_name" else None): e["args"]["name"]
          for e in events if e.get("ph") == "M" and e.get("name") == kind}


def _self_times(events) -> List[float]:
  """Each event's duration less that of the events directly inside it on the same line."""
  own = [float(e.get("dur", 0.0)) for e in events]
  by_line = collections.defaultdict(list)
  for n, e in enumerate(events):
    by_line[(e["pid"], e.get("tid"))].append(n)
  for indices in by_line.values():
    indices.sort(key=lambda n: (events[n]["ts"], -own[n]))
    open_events = []  # (end, index) of the events that enclose the current one, innermost last
    for n in indices:
      start = events[n]["ts"]
      while open_events and open_events[-1][0] <= start:
        open_events.pop()
      if open_events:
        own[open_events[-1][1]] -= float(events[n].get("dur", 0.0))
      open_events.append((start + float(events[n].get("dur", 0.0)), n))
  return [max(t, 0.0) for t in own]


def read(path: str) -> Tuple[List[OpTime], int, str]:
  """(ops, longest first; profiled steps, 0 when the trace marks none; which lines were read) of a trace."""
  with gzip.open(find_trace(path), "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  processes, threads = _names(events, "process_name"), _names(events, "thread_name")
  ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
         and threads.get((e["pid"], e.get("tid")), "") not in DERIVED_LINES]
  device = [e for e in ops if processes.get((e["pid"], None), "").startswith("/device:")]
  chosen = device or ops
  where = sorted({f"{processes.get((e['pid'], None), e['pid'])}: {threads.get((e['pid'], e.get('tid')), e.get('tid'))}"
                  for e in chosen})
  totals, calls, kernels = collections.Counter(), collections.Counter(), {}
  for e, duration in zip(chosen, _self_times(chosen)):
    op = e["args"]["hlo_op"]
    totals[op] += duration
    calls[op] += 1
    if duration >= kernels.get(op, ("", -1.0))[1]:
      kernels[op] = (e["name"], duration)
  steps = {e["args"]["step_num"] for e in events
           if e.get("ph") == "X" and "step_num" in e.get("args", {}) and "hlo_op" not in e["args"]}
  table = [OpTime(op, kernels[op][0], calls[op], us) for op, us in totals.most_common()]
  return table, len(steps), "; ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")


def summarise(path: str, top: int = 15) -> str:
  """The `top` ops by time of the trace at `path` as a markdown table, with a header line of totals."""
  ops, steps, where = read(path)
  total = sum(o.microseconds for o in ops)
  per = max(steps, 1)
  lines = [f"# top {min(top, len(ops))} of {len(ops)} XLA ops by time: {total / 1e3 / per:.2f} ms of op time "
           f"{'per step over ' + str(steps) + ' steps' if steps else 'in the whole trace'} ({where})",
           f"| op | kernel | calls{' per step' if steps else ''} | ms{' per step' if steps else ''} | share |",
           "|---|---|---|---|---|"]
  for o in ops[:top]:
    kernel = o.kernel if len(o.kernel) <= 60 else o.kernel[:57] + "..."
    lines.append(f"| {o.op} | {kernel} | {o.calls / per:g} | {o.microseconds / 1e3 / per:.3f} | "
                 f"{o.microseconds / total:.1%} |")
  return "\n".join(lines)
