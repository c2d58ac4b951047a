"""Metrics: reduction of (sum, weight) pairs, the per-step metrics line, and TensorBoard summaries."""
import json
from typing import Dict, Mapping, Optional

import jax
import numpy as np
from tensorboardX import SummaryWriter

from shardline.core import paths


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
  google-cloud-storage and boto3), and the JSON lines go through the path layer.
  """

  def __init__(self, model_dir: str, primary: bool):
    self._model_dir, self._primary = model_dir, primary
    self._writers = {}
    self._jsonl = {}

  def write(self, kind: str, step: int, values: Mapping[str, float]) -> None:
    if not self._primary:
      return
    if kind not in self._writers:
      self._writers[kind] = SummaryWriter(logdir=paths.join(self._model_dir, kind))
      self._jsonl[kind] = paths.TextAppender(paths.join(self._model_dir, "metrics", f"{kind}.jsonl"))
    writer = self._writers[kind]
    for key, value in values.items():
      if value is not None:
        writer.add_scalar(key, value, step)
    writer.flush()
    self._jsonl[kind].write(json.dumps({"step": step, **{k: v for k, v in values.items() if v is not None}})
                            + "\n")

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    for f in self._jsonl.values():
      f.close()
