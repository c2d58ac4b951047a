"""A small parser for the text of compiled HLO modules, enough to read structure, shapes and schedules.

`parse` returns each computation's instructions in printed order (the schedule, in scheduled modules), with
their result shape, opcode, operands, called computations and the raw attribute text.
"""
import dataclasses
import re
from typing import Dict, List, Optional, Tuple

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\((.*)$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLED = re.compile(r"(?:calls|to_apply|body|condition|branch_computations)=\{?([%\w.\-, ]+)\}?")
_ARRAY_SHAPE = re.compile(r"^[a-z]\w*\[([\d,]*)\]")


@dataclasses.dataclass
class Instruction:
  name: str
  shape: str  # the result type as printed, e.g. "f32[8,16]{1,0}" or a tuple
  opcode: str
  operands: List[str]
  called: List[str]
  attributes: str

  def dims(self) -> Optional[Tuple[int, ...]]:
    """The result's dimensions, for an array result."""
    match = _ARRAY_SHAPE.match(self.shape)
    if not match:
      return None
    return tuple(int(d) for d in match.group(1).split(",") if d)


@dataclasses.dataclass
class Module:
  computations: Dict[str, List[Instruction]]
  entry: Optional[str]


def _split_operands(rest: str) -> Tuple[str, str]:
  """Splits 'operands), attributes' at the parenthesis that closes the operand list."""
  depth = 1
  for i, ch in enumerate(rest):
    if ch == "(":
      depth += 1
    elif ch == ")":
      depth -= 1
      if depth == 0:
        return rest[:i], rest[i + 1:]
  return rest, ""


def parse(hlo_text: str) -> Module:
  """Parses a module's text into computations of instructions."""
  computations: Dict[str, List[Instruction]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line) if not line.startswith((" ", "\t")) else None
    if header:  # computation headers are unindented; their parameter lists may hold /*index=5*/ comments
      current = header.group(2)
      computations[current] = []
      if header.group(1):
        entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if current is None or not match:
      continue
    name, shape, opcode, rest = match.groups()
    operands, attributes = _split_operands(rest)
    called = [c.strip().lstrip("%") for group in _CALLED.findall(attributes) for c in group.split(",") if c.strip()]
    computations[current].append(Instruction(name, shape.strip(), opcode, _OPERAND.findall(operands), called,
                                             attributes))
  return Module(computations, entry)
