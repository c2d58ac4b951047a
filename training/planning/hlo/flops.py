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

from shardline.kernels import kernel_names
from shardline.training.planning.hlo import text as hlo_text

_DIMS = re.compile(r"(lhs_contracting_dims|rhs_contracting_dims|lhs_batch_dims)=\{([\d,]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_DIM_LABELS = re.compile(r"dim_labels=(\w+)_(\w+)->(\w+)")
_GROUPS = re.compile(r"feature_group_count=(\d+)")
_FIRST_ARRAY = re.compile(r"^\(?\s*[a-z]\w*\[([\d,]*)\]")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_GEMM_CONTRACTING = re.compile(r'"lhs_contracting_dimensions":\[([^\]]*)\]')


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


def _result_dims(instr: hlo_text.Instruction) -> Optional[tuple]:
  """The dimensions of the result, or of its first element for a tuple (GPU library calls add a workspace)."""
  match = _FIRST_ARRAY.match(instr.shape)
  return tuple(int(d) for d in match.group(1).split(",") if d) if match else None


def _conv_flops(instr: hlo_text.Instruction, shapes, out=None, kernel=None) -> float:
  """2 x (forward output elements) x (kernel elements per output feature); `out`/`kernel` default to the
  convolution's result and second operand."""
  out = out or _result_dims(instr)
  kernel = kernel or (shapes.get(instr.operands[1]) if len(instr.operands) > 1 else None)
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
        total += _custom_call_flops(instr, shapes)
      else:
        total += sum(flops_of(c) for c in instr.called if c in module.computations)
    return total

  return flops_of(module.entry) if module.entry else 0.0


def _library_call_flops(target: str, instr: hlo_text.Instruction, shapes) -> Optional[float]:
  """FLOPs of the GPU library calls that XLA rewrites dots and convolutions into (cuBLAS, cuDNN)."""
  operand = lambda i: shapes.get(instr.operands[i]) if len(instr.operands) > i else None
  if target.startswith("__cublas$"):  # __cublas$gemm, __cublas$lt$matmul, ...: a dot
    out, lhs = _result_dims(instr), operand(0)
    contracting = _GEMM_CONTRACTING.search(instr.attributes)
    if out is None or lhs is None or not contracting:
      return 0.0
    dims = [int(d) for d in re.findall(r"\d+", contracting.group(1))]
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in dims)
  if target.startswith("__cudnn$conv"):  # the same count for the forward and both gradients
    if "BackwardInput" in target:
      return _conv_flops(instr, shapes, out=operand(0), kernel=operand(1))
    if "BackwardFilter" in target:
      return _conv_flops(instr, shapes, out=operand(1), kernel=_result_dims(instr))
    return _conv_flops(instr, shapes)
  return None


def _custom_call_flops(instr: hlo_text.Instruction, shapes) -> float:
  """cuBLAS/cuDNN calls count as their dot or convolution; a Pallas kernel carries its declared FLOPs in its
  backend config: on TPU as a cost estimate, on GPU in its name (`kernels/kernel_names.py`)."""
  target = _TARGET.search(instr.attributes)
  library = _library_call_flops(target.group(1), instr, shapes) if target else None
  if library is not None:
    return library
  named = kernel_names.FLOPS_IN_NAME.search(instr.attributes)
  if named:
    return float(named.group(1))
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
