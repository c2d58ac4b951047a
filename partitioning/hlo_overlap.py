"""Reads compiled HLO to check, rather than assume, that communication can overlap matmuls.

Two views:
  * dependence (any backend): a collective-permute and a matmul with no path between them in the dataflow
    graph may run at the same time; `independent_matmuls` counts, for every permute, such matmuls.
  * schedule (TPU and GPU, which split collectives into start/done pairs): `overlapped_matmuls` lists, for
    every collective-permute-start, the matmuls that the compiled schedule places before its done.

A "matmul" is a dot or convolution instruction, or a fusion whose called computation contains one.
"""
import dataclasses
import re
from typing import Dict, List, Set

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\((.*)$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLS = re.compile(r"calls=%([\w.\-]+)")


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  operands: List[str]
  calls: List[str]


def parse(hlo_text: str) -> Dict[str, List[Instruction]]:
  """Computation name -> its instructions, in the order printed (the schedule, for scheduled modules)."""
  computations: Dict[str, List[Instruction]] = {}
  current = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and "=" not in line.split("{")[0]:
      current = header.group(1)
      computations[current] = []
      continue
    if line.strip() == "}":
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if current is None or not match:
      continue
    name, _, opcode, rest = match.groups()
    args = rest.split("),")[0] if ")," in rest else rest.rsplit(")", 1)[0]
    computations[current].append(Instruction(name, opcode, _OPERAND.findall(args), _CALLS.findall(rest)))
  return computations


def _matmul_computations(computations: Dict[str, List[Instruction]]) -> Set[str]:
  has = {name for name, instrs in computations.items() if any(i.opcode in ("dot", "convolution") for i in instrs)}
  changed = True
  while changed:  # A computation that calls one with a matmul has one too.
    changed = False
    for name, instrs in computations.items():
      if name not in has and any(c in has for i in instrs for c in i.calls):
        has.add(name)
        changed = True
  return has


def _is_matmul(instr: Instruction, matmul_computations: Set[str]) -> bool:
  return instr.opcode in ("dot", "convolution") or any(c in matmul_computations for c in instr.calls)


def independent_matmuls(hlo_text: str) -> List[int]:
  """For each collective-permute (or -start), how many matmuls of its computation neither feed it nor use it."""
  computations = parse(hlo_text)
  matmul_comps = _matmul_computations(computations)
  counts = []
  for instrs in computations.values():
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


def overlapped_matmuls(scheduled_hlo_text: str) -> List[int]:
  """For each collective-permute-start, the number of matmuls scheduled between it and its done."""
  computations = parse(scheduled_hlo_text)
  matmul_comps = _matmul_computations(computations)
  counts = []
  for instrs in computations.values():
    position = {i.name: n for n, i in enumerate(instrs)}
    for n, instr in enumerate(instrs):
      if instr.opcode != "collective-permute-start":
        continue
      done = next((j for j in instrs[n + 1:] if j.opcode == "collective-permute-done" and instr.name in j.operands),
                  None)
      if done is None:
        continue
      between = instrs[n + 1:position[done.name]]
      counts.append(sum(1 for j in between if _is_matmul(j, matmul_comps)))
  return counts
