"""Names for GPU (Triton) kernels that carry the kernel's FLOPs.

A Pallas call lowered for Triton keeps no cost estimate in its HLO, only its name; training/planning/hlo/flops.py reads
the FLOPs back from names made here.
"""
import re

FLOPS_IN_NAME = re.compile(r'name = "\w*_flops(\d+)"')  # as the name appears in the call's backend config


def with_flops(name: str, flops: float) -> str:
  """'attention_forward', 1e9 -> 'attention_forward_flops1000000000'."""
  return f"{name}_flops{int(flops)}"
