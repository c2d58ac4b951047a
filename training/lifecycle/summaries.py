"""Metrics: reduction of (sum, weight) pairs, the per-step metrics line, and TensorBoard summaries."""
import io
import json
import time
from typing import Dict, Mapping, Optional

import jax
import numpy as np

from shardline.core import paths
from shardline.training.lifecycle import storage


def reduce_metrics(metrics: Mapping[str, tuple]) -> Dict[str, float]:
  """{name: (sum, weight)} -> {name: sum / weight} as Python floats."""
  host = jax.device_get(dict(metrics))
  return {k: float(np.asarray(s) / max(float(np.asarray(w)), 1e-12)) for k, (s, w) in host.items()}


def accumulate(total: Optional[Dict[str, tuple]], metrics: Mapping[str, tuple]) -> Dict[str, tuple]:
  """Adds (sum, weight) pairs on the host."""
  host = jax.device_get(dict(metrics))
  if total is None:
    return {k: (np.asarray(s, np.float64), np.asarray(w, np.float64)) for k, (s, w) in host.items()}
  return {k: (total[k][0] + s, total[k][1] + w) for k, (s, w) in host.items()}


def format_line(step: int, values: Mapping[str, float]) -> str:
  """'step 100 | loss 0.1234 | accuracy 96.50% | ...' with the usual units."""
  parts = [f"step {step}"]
  for key, value in values.items():
    if value is None:
      continue
    if key in ("mfu",) or key.endswith("accuracy") or "success" in key:
      parts.append(f"{key} {100 * value:.2f}%")
    elif key == "learning_rate":
      parts.append(f"lr {value:.2e}")
    elif key == "step_time":
      parts.append(f"{value * 1e3:.1f} ms/step")
    elif key == "data_wait_ms":
      share = values.get("data_wait_fraction")
      parts.append(f"data wait {value:.1f} ms" + (f" ({100 * share:.1f}%)" if share is not None else ""))
    elif key in ("data_wait_fraction", "batch_fingerprint"):
      continue  # shown with data_wait_ms; in the JSON lines only
    elif key == "examples_per_sec":
      parts.append(f"{value:.1f} ex/s")
    elif key == "trainable_parameters":
      parts.append(f"trainable {int(value):,} params")
    elif key == "tflops_per_device":
      parts.append(f"{value:.3f} TFLOP/s/dev")
    else:
      parts.append(f"{key} {value:.4g}")
  return " | ".join(parts)


class Summaries:
  """TensorBoard event files under MODEL_DIR/<kind> (train, goodput, and each evaluator's name: eval, fewshot,
  ...), and the same values, exact, as JSON lines in MODEL_DIR/metrics/<kind>.jsonl (appended across resumes).
  Only the primary process writes; a kind's files are opened on its first write.

  MODEL_DIR may be a bucket: tensorboardX writes gs:// and s3:// event files itself (through
  google-cloud-storage and boto3), and the JSON lines go through the path layer. Every write goes through the
  run's Store (storage.py), so an outage is retried and bounded.

  Events are written with tensorboardX's synchronous EventsWriter, not its SummaryWriter: SummaryWriter flushes
  from a background thread, and a flush that fails there (a store that does not answer, a full disk) kills the
  thread and leaves every later write blocked on its full queue; it also flushes again at interpreter exit. In a
  bucket, event files go through the path layer (_BucketFiles) rather than tensorboardX's own boto3 and
  google-cloud-storage uploads, whose retries are not bounded by the run's settings (google-cloud-storage waits
  up to 120 s per upload).
  """

  def __init__(self, model_dir: str, primary: bool, store: Optional[storage.Store] = None):
    self._model_dir, self._primary = model_dir, primary
    self._store = store or storage.Store(model_dir)
    self._writers = {}
    self._jsonl = {}

  def _open(self, kind: str) -> None:
    # pylint: disable=g-import-not-at-top  (tensorboardX is not needed to benchmark a step on a GPU machine)
    from tensorboardX import event_file_writer, record_writer
    for scheme in paths.REMOTE_SCHEMES:
      record_writer.register_writer_factory(scheme, _BucketFiles())
    directory = paths.join(self._model_dir, kind)
    record_writer.directory_check(directory)
    self._writers[kind] = event_file_writer.EventsWriter(paths.join(directory, "events"))
    self._jsonl[kind] = paths.TextAppender(paths.join(self._model_dir, "metrics", f"{kind}.jsonl"))

  def write(self, kind: str, step: int, values: Mapping[str, float]) -> None:
    """Writes one row of metrics of `kind` at `step`, durably."""
    if not self._primary:
      return
    if kind not in self._writers:
      self._store.run(f"opening the {kind} summaries", lambda: self._open(kind))
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    writer = self._writers[kind]
    for key, value in values.items():
      if value is not None:
        writer.write_event(event_pb2.Event(summary=summary.scalar(key, float(value)), step=step,
                                           wall_time=time.time()))
    row = json.dumps({"step": step, **{k: v for k, v in values.items() if v is not None}}) + "\n"
    self._store.run(f"writing the {kind} metrics of step {step}", writer.flush)
    self._store.run(f"writing metrics/{kind}.jsonl at step {step}", lambda: self._jsonl[kind].write(row))

  def close(self) -> None:
    """Flushes and closes every writer."""
    for kind, writer in self._writers.items():
      self._store.run(f"closing the {kind} summaries", writer.close)
    for f in self._jsonl.values():
      f.close()

  def abandon(self) -> None:
    """Lets go of the writers without flushing: the store is gone and the run ends (the CLI then exits with
    os._exit, so no writer flushes at interpreter exit either)."""
    self._writers, self._jsonl = {}, {}



class _BucketFile:
  """An event file in a bucket, for tensorboardX's RecordWriter: objects cannot be appended to, so the records
  are kept in memory and the whole file is written at each flush (as tensorboardX's own bucket writers do)."""

  def __init__(self, path: str):
    self.path, self._records = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self._records.write(data)

  def flush(self) -> None:
    paths.write_bytes(self.path, self._records.getvalue())

  def close(self) -> None:
    self.flush()


class _BucketFiles:
  """tensorboardX's writer factory for gs:// and s3:// event files (record_writer.register_writer_factory)."""

  def open(self, path: str) -> _BucketFile:
    return _BucketFile(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no directories
