"""Reads compiled HLO to check, rather than assume, that communication can overlap matmuls.

Two views:
  * dependence (any backend): a collective-permute and a matmul with no path between them in the dataflow
    graph may run at the same time; `independent_matmuls` counts, for every permute, such matmuls.
  * schedule (TPU and GPU, which split collectives into start/done pairs): `overlapped_matmuls` lists, for
    every collective-permute-start, the matmuls that the compiled schedule places before its done.

A "matmul" is a dot or convolution instruction, or a fusion whose called computation contains one.
"""
from typing import Dict, List, Set

from shardline.training.planning.hlo import text as hlo_text

MATMUL_OPCODES = ("dot", "convolution")


def matmul_computations(module: hlo_text.Module) -> Set[str]:
  """The computations that contain a matmul, directly or through the computations they call."""
  has = {name for name, instrs in module.computations.items() if any(i.opcode in MATMUL_OPCODES for i in instrs)}
  changed = True
  while changed:
    changed = False
    for name, instrs in module.computations.items():
      if name not in has and any(c in has for i in instrs for c in i.called):
        has.add(name)
        changed = True
  return has


def _is_matmul(instr: hlo_text.Instruction, matmul_comps: Set[str]) -> bool:
  return instr.opcode in MATMUL_OPCODES or (instr.opcode == "fusion" and any(c in matmul_comps
                                                                             for c in instr.called))


def independent_matmuls(hlo: str) -> List[int]:
  """For each collective-permute (or -start), how many matmuls of its computation neither feed it nor use it."""
  module = hlo_text.parse(hlo)
  matmul_comps = matmul_computations(module)
  counts = []
  for instrs in module.computations.values():
    by_name = {i.name: i for i in instrs}
    ancestors: Dict[str, Set[str]] = {}
    for instr in instrs:  # HLO prints operands before their users.
      seen = set()
      for op in instr.operands:
        if op in by_name:
          seen.add(op)
          seen |= ancestors.get(op, set())
      ancestors[instr.name] = seen
    matmuls = [i.name for i in instrs if _is_matmul(i, matmul_comps)]
    for instr in instrs:
      if instr.opcode in ("collective-permute", "collective-permute-start"):
        counts.append(sum(1 for m in matmuls
                          if m not in ancestors[instr.name] and instr.name not in ancestors[m]))
  return counts


def overlapped_matmuls(scheduled_hlo: str) -> List[int]:
  """For each collective-permute-start, the number of matmuls scheduled between it and its done."""
  module = hlo_text.parse(scheduled_hlo)
  matmul_comps = matmul_computations(module)
  counts = []
  for instrs in module.computations.values():
    position = {i.name: n for n, i in enumerate(instrs)}
    for n, instr in enumerate(instrs):
      if instr.opcode != "collective-permute-start":
        continue
      done = next((j for j in instrs[n + 1:] if j.opcode == "collective-permute-done" and instr.name in j.operands),
                  None)
      if done is None:
        continue
      counts.append(sum(1 for j in instrs[n + 1:position[done.name]] if _is_matmul(j, matmul_comps)))
  return counts
