"""Timing with on-device synchronisation, and a description of where a figure was measured."""
import datetime
import platform
import statistics
import time
from typing import Callable, Dict, List

import jax


def time_fn(fn: Callable, *args, warmup: int = 1, iters: int = 3) -> Dict[str, float]:
  """Runs fn(*args) `warmup` times, then times `iters` runs, each waited for on the device.

  Returns median and min seconds per call and every sample.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  samples: List[float] = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - start)
  return {"median": statistics.median(samples), "min": min(samples), "samples": samples}


def environment() -> Dict[str, str]:
  """Device kind, device count, jax version, host and date, for recording with every figure."""
  device = jax.devices()[0]
  return {
      "device": f"{jax.device_count()} x {device.device_kind}",
      "backend": jax.default_backend(),
      "jax": jax.__version__,
      "host": f"{platform.node()} ({platform.processor() or platform.machine()})",
      "date": datetime.date.today().isoformat(),
  }
