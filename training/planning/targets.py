"""Hardware a run can be planned for: TPU topologies (compiled ahead of time through libtpu) and GPU nodes.

`num_devices`, `hbm_bytes` and `peak_tflops` are per chip until `tpu_devices` has seen the topology's devices.

Names: Cloud TPU accelerator types (v3-128, v4-1024, v5p-256, v5litepod-64, v6e-256: v3, v4 and v5p count
TensorCores, two per chip; v5e and v6e count chips), explicit chip grids (v4:8x8x8, v5e:16x16), and GPU counts (8xH100,
16xH200).
"""
import dataclasses
import math
import os
import re
from typing import Optional

from shardline.core.errors import UserError
from shardline.training.planning import hardware

# Chip grids of common slice sizes (by chip count), per TPU generation; peaks and HBM are in hardware.CHIPS.
_GRIDS = {
    "v3": {4: "2x2", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16", 512: "16x32", 1024: "32x32"},
    "v4": {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
           512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"},
    "v5e": {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
}
_GRIDS["v5p"] = _GRIDS["v4"]
_GRIDS["v6e"] = _GRIDS["v5e"]
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6litepod": "v6e"}


@dataclasses.dataclass(frozen=True)
class Target:
  """A planning target: platform, device count, per-device HBM and peak, and (TPU) the libtpu topology name."""
  name: str
  platform: str
  num_devices: int
  hbm_bytes: int
  peak_tflops: float
  device_kind: str
  topology: Optional[str] = None  # e.g. "v4:8x8x8", for jax.experimental.topologies


def resolve(name: str) -> Target:
  """Parses a target name; a UserError lists the accepted forms otherwise."""
  gpu = re.fullmatch(r"(\d+)x([A-Za-z]\d+)", name)
  if gpu:
    count, model = int(gpu.group(1)), gpu.group(2).upper()
    gpu_chip = hardware.chip(model)
    if gpu_chip is None or gpu_chip.platform != "gpu":
      known = ", ".join(c.name for c in hardware.CHIPS if c.platform == "gpu")
      raise UserError(f"Unknown GPU {model!r} in --topology={name}; known: {known}.")
    return Target(name, "gpu", count, gpu_chip.hbm_bytes, gpu_chip.peak_tflops, gpu_chip.kind)
  grid = re.fullmatch(r"(v\w+?):(\d+(?:x\d+)+)", name)
  accel = re.fullmatch(r"(v\w+?)-(\d+)", name)
  if not grid and not accel:
    raise UserError(f"Unknown --topology={name!r}. Use a TPU accelerator type (v4-1024, v5p-256, v5litepod-64, "
                    "v6e-256), a chip grid (v4:8x8x8) or a GPU count (8xH100).")
  generation = (grid or accel).group(1)
  generation = _ALIASES.get(generation, generation)
  spec = hardware.chip(generation)
  if spec is None or spec.platform != "tpu":
    raise UserError(f"Unknown TPU generation {generation!r} in --topology={name}; known: {', '.join(_GRIDS)}.")
  if grid:
    shape = grid.group(2)
    chips = math.prod(int(d) for d in shape.split("x"))
  else:
    cores = int(accel.group(2))
    chips = cores // spec.cores_in_name
    if chips not in _GRIDS[generation]:
      known = ", ".join(f"{generation}-{c * spec.cores_in_name}" for c in _GRIDS[generation])
      raise UserError(f"--topology={name}: no known {generation} slice of {chips} chips; known sizes: {known}.")
    shape = _GRIDS[generation][chips]
  return Target(name, "tpu", chips, spec.hbm_bytes, spec.peak_tflops, spec.kind, f"{generation}:{shape}")


def tpu_devices(target: Target):
  """Compile-only devices of the target's TPU topology (libtpu on a CPU-only machine), and the target with
  per-device HBM and peak adjusted to them: libtpu exposes v4 as one device per TensorCore, two per chip."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # Compiling needs no TPU, so it must not take libtpu's one-process lock either: a plan may run beside a
  # training run, or beside another plan.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    devices = topologies.get_topology_desc(target.topology, "tpu").devices
  except Exception as e:  # libtpu missing, or a topology it does not know
    raise UserError(f"Cannot build the TPU topology {target.topology}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0]} (libtpu comes with the TPU extra: pip install 'shardline[tpu]').") from e
  per_chip = len(devices) // target.num_devices
  return devices, dataclasses.replace(target, num_devices=len(devices), hbm_bytes=target.hbm_bytes // per_chip,
                                      peak_tflops=target.peak_tflops / per_chip)
