"""The one table of accelerators shardline knows: peak dense bfloat16 TFLOP/s and HBM per chip, and how JAX names
and counts their devices. MFU (mfu.py) and `shardline plan`'s targets (targets.py) both read it."""
import dataclasses
from typing import Optional, Tuple

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip.

  Attributes:
    name: the short name used in plan targets ('H100', 'v4').
    platform: 'gpu' or 'tpu'.
    device_kinds: substrings of `jax.Device.device_kind` that name this chip (matched in table order).
    peak_tflops: dense bfloat16 peak per chip.
    hbm_bytes: HBM per chip.
    devices_per_chip: JAX devices per chip (TPU v3 exposes each of its two TensorCores as a device).
    cores_in_name: TensorCores per chip counted by Cloud TPU accelerator types (v4-1024 is 512 chips).
    kind: the device kind reported for this chip, as plans print it.
  """
  name: str
  platform: str
  device_kinds: Tuple[str, ...]
  peak_tflops: float
  hbm_bytes: int
  devices_per_chip: int = 1
  cores_in_name: int = 1
  kind: str = ""


# Order matters: the first chip whose device_kinds match wins ("TPU v5 lite" before "TPU v5").
CHIPS = (
    Chip("H200", "gpu", ("H200",), 989.0, 141 * GIB, kind="NVIDIA H200"),
    Chip("H100", "gpu", ("H100",), 989.0, 80 * GIB, kind="NVIDIA H100"),
    Chip("A100", "gpu", ("A100",), 312.0, 80 * GIB, kind="NVIDIA A100"),
    Chip("v6e", "tpu", ("TPU v6 lite", "TPU v6e"), 918.0, 32 * GIB, kind="TPU v6 lite"),
    Chip("v5e", "tpu", ("TPU v5 lite", "TPU v5e"), 197.0, 16 * GIB, kind="TPU v5 lite"),
    Chip("v5p", "tpu", ("TPU v5p", "TPU v5"), 459.0, 95 * GIB, cores_in_name=2, kind="TPU v5p"),
    Chip("v4", "tpu", ("TPU v4",), 275.0, 32 * GIB, cores_in_name=2, kind="TPU v4"),
    Chip("v3", "tpu", ("TPU v3",), 123.0, 32 * GIB, devices_per_chip=2, cores_in_name=2, kind="TPU v3"),
)


def chip(name: str) -> Optional[Chip]:
  """The chip with this short name ('H100', 'v4'), or None."""
  return next((c for c in CHIPS if c.name == name), None)


def chip_of(device_kind: str) -> Optional[Chip]:
  """The chip a JAX device kind names, or None (CPUs)."""
  kind = device_kind.lower()
  return next((c for c in CHIPS if any(k.lower() in kind for k in c.device_kinds)), None)


def peak_tflops_per_device(device_kind: str) -> Optional[float]:
  """Dense bfloat16 peak TFLOP/s of one JAX device of this kind, or None when unknown (CPUs)."""
  found = chip_of(device_kind)
  return found.peak_tflops / found.devices_per_chip if found else None
