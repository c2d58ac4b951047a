"""FLOPs from the compiled step, device peaks, and model FLOP utilisation (MFU)."""
from typing import Optional

import jax

from shardline.training import hlo_flops

# Dense bf16 peak TFLOP/s per device, by substring of `device.device_kind`. Order matters: the first match wins.
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("TPU v6 lite", 918.0),
    ("TPU v6e", 918.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v5", 459.0),
    ("TPU v4", 275.0),
    ("TPU v3", 61.5),  # per TensorCore: v3 exposes each of a chip's two cores (123 TFLOP/s) as a device
)


def peak_tflops(device_kind: str) -> Optional[float]:
  """Dense bf16 peak TFLOP/s of one device of this kind, or None when unknown (CPUs)."""
  for key, peak in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return peak
  return None


def compiled_flops(compiled: jax.stages.Compiled) -> Optional[float]:
  """Matmul FLOPs per device of one execution of the compiled (partitioned) program.

  Counted from its HLO with loops multiplied out (hlo_flops.py): XLA's own cost analysis counts a scanned
  layer stack once, whatever its depth.
  """
  flops = hlo_flops.count(compiled.as_text())
  return flops if flops > 0 else None


def mfu(flops_per_device: Optional[float], seconds: float, device_kind: str) -> Optional[float]:
  """Achieved FLOP/s per device over the device's peak, or None when either is unknown."""
  peak = peak_tflops(device_kind)
  if not flops_per_device or not peak or seconds <= 0:
    return None
  return flops_per_device / seconds / (peak * 1e12)
