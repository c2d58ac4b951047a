"""FLOPs from the compiled step, device peaks, and model FLOP utilisation (MFU)."""
from typing import Optional

import jax

from shardline.training.planning import hardware
from shardline.training.planning.hlo import flops as hlo_flops

def compiled_flops(compiled: jax.stages.Compiled) -> Optional[float]:
  """Matmul FLOPs per device of one execution of the compiled (partitioned) program.

  Counted from its HLO with loops multiplied out (hlo_flops.py): XLA's own cost analysis counts a scanned
  layer stack once, whatever its depth.
  """
  flops = hlo_flops.count(compiled.as_text())
  return flops if flops > 0 else None


def mfu(flops_per_device: Optional[float], seconds: float, device_kind: str) -> Optional[float]:
  """Achieved FLOP/s per device over the device's peak, or None when either is unknown."""
  peak = hardware.peak_tflops_per_device(device_kind)
  if not flops_per_device or not peak or seconds <= 0:
    return None
  return flops_per_device / seconds / (peak * 1e12)
