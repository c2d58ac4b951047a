"""Matmul FLOPs of a compiled program, counted from its HLO, with loops multiplied out.

XLA's `cost_analysis()['flops']` counts the body of a while loop once, whatever its trip count, so a model
whose layers are scanned is undercounted by its depth. This counter walks the compiled module from its entry:
every dot and convolution contributes 2 x (output elements) x (contracted elements per output), and a while
loop's body is weighted by the trip count XLA recorded for it (`known_trip_count`). Elementwise work is not
counted: the figure is the matmul FLOPs that MFU conventionally counts. With rematerialisation the compiled
program recomputes parts of the forward pass; those recomputed matmuls are counted too (see `model_flops`).
"""
import functools
import json
import math
import re
from typing import Dict, Optional

from shardline.partitioning import hlo_text

_DIMS = re.compile(r"(lhs_contracting_dims|rhs_contracting_dims|lhs_batch_dims)=\{([\d,]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_DIM_LABELS = re.compile(r"dim_labels=(\w+)_(\w+)->(\w+)")
_GROUPS = re.compile(r"feature_group_count=(\d+)")


def _shapes(instrs) -> Dict[str, Optional[tuple]]:
  return {i.name: i.dims() for i in instrs}


def _dot_flops(instr: hlo_text.Instruction, shapes) -> float:
  out = instr.dims()
  lhs = shapes.get(instr.operands[0]) if instr.operands else None
  if out is None or lhs is None:
    return 0.0
  dims = dict(_DIMS.findall(instr.attributes))
  contracting = [int(d) for d in dims.get("lhs_contracting_dims", "").split(",") if d]
  return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contracting)


def _conv_flops(instr: hlo_text.Instruction, shapes) -> float:
  out = instr.dims()
  kernel = shapes.get(instr.operands[1]) if len(instr.operands) > 1 else None
  labels = _DIM_LABELS.search(instr.attributes)
  if out is None or kernel is None or not labels:
    return 0.0
  out_feature = labels.group(2).index("o")  # kernel layout, e.g. 01io
  per_output = math.prod(kernel) / kernel[out_feature]
  return 2.0 * math.prod(out) * per_output


def count(hlo: str) -> float:
  """Matmul FLOPs of one execution of the module (per device, for a partitioned module)."""
  module = hlo_text.parse(hlo)

  @functools.lru_cache(maxsize=None)
  def flops_of(name: str) -> float:
    instrs = module.computations.get(name, [])
    shapes = _shapes(instrs)
    total = 0.0
    for instr in instrs:
      if instr.opcode == "dot":
        total += _dot_flops(instr, shapes)
      elif instr.opcode == "convolution":
        total += _conv_flops(instr, shapes)
      elif instr.opcode == "while":
        trip = _TRIP.search(instr.attributes)
        body = re.search(r"body=%?([\w.\-]+)", instr.attributes)
        if body:
          total += (int(trip.group(1)) if trip else 1) * flops_of(body.group(1))
      elif instr.opcode == "custom-call":
        total += _custom_call_flops(instr)
      else:
        total += sum(flops_of(c) for c in instr.called if c in module.computations)
    return total

  return flops_of(module.entry) if module.entry else 0.0


def _custom_call_flops(instr: hlo_text.Instruction) -> float:
  """A Pallas kernel that declared a cost estimate carries its FLOPs in its backend config."""
  match = re.search(r'"flops":\s*"?(\d+)', instr.attributes)
  if match:
    return float(match.group(1))
  config = re.search(r"backend_config=(\{.*\})", instr.attributes)
  if config:
    try:
      return float(json.loads(config.group(1)).get("cost_estimate", {}).get("flops", 0))
    except (ValueError, AttributeError):
      return 0.0
  return 0.0
