"""Which checkpoint parameter initialises which parameter of the model being trained (`train.init_from`).

Names are paths with '/' between levels, as `shardline plan` lists them. For each parameter of the new model:
1. a `dont_load` regex that matches its whole name keeps it as the model initialises it;
2. otherwise the first `assignment_map` rule (regex, replacement) whose regex matches its whole name gives the
   checkpoint name `re.sub(regex, replacement, name)`, or keeps it fresh if the replacement is None;
   without a matching rule the checkpoint name is its own name;
3. the checkpoint parameter is copied when the shapes agree (cast to the new dtype), a position embedding on a
   square grid is resized, and a head (the model's `TransferRules`) whose shape changed starts from zeros;
4. a parameter the checkpoint lacks may be upcycled (the model's `TransferRules.expert_stacks`: a MoE layer's
   experts, each a copy of the dense checkpoint's MLP) or start as initialised (`fresh_when_absent`: its router).
Anything else (a name the checkpoint lacks, a shape that differs elsewhere) is an error listing every case.
"""
import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

from shardline.core.errors import UserError
from shardline.models.base import TransferRules

Shape = Tuple[int, ...]

LOAD = "load"  # copy (and cast)
RESIZE = "resize"  # position embedding resized bilinearly on its patch grid
ZEROS = "zeros"  # a head whose shape changed
TILE = "tile"  # a dense parameter copied into every expert (sparse upcycling)
FRESH = "fresh"  # as the new model initialises it (dont_load, or an assignment to None)


@dataclasses.dataclass(frozen=True)
class Action:
  """What initialises one parameter of the new model."""
  kind: str
  source: Optional[str] = None  # the checkpoint parameter read (LOAD, RESIZE)


@dataclasses.dataclass
class Mapping:
  """The action for every parameter of the new model, and the checkpoint parameters nobody reads."""
  actions: Dict[str, Action]
  unused: List[str]

  def sources(self) -> List[str]:
    """Checkpoint parameters to read."""
    return sorted({a.source for a in self.actions.values() if a.kind in (LOAD, RESIZE, TILE)})

  def named(self, kind: str) -> List[str]:
    return sorted(name for name, action in self.actions.items() if action.kind == kind)

  def summary(self) -> str:
    """One line: how many parameters each action covers, naming the ones not simply copied."""
    parts = [f"{len(self.named(LOAD))} copied"]
    for kind, words in ((RESIZE, "resized"), (TILE, "copied into every expert (upcycled)"),
                        (ZEROS, "zero-initialised (shape changed)"),
                        (FRESH, "kept as initialised")):
      names = self.named(kind)
      if names:
        parts.append(f"{len(names)} {words}: {_listing(names)}")
    if self.unused:
      parts.append(f"{len(self.unused)} checkpoint parameters unused: {_listing(self.unused)}")
    return "; ".join(parts)


def _listing(names: Sequence[str], limit: int = 6) -> str:
  return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_regexes(dont_load: Sequence[str], assignment_map: Sequence[Tuple[str, Optional[str]]]) -> None:
  for pattern in list(dont_load) + [rule[0] for rule in assignment_map]:
    try:
      re.compile(pattern)
    except re.error as e:
      raise UserError(f"train.init_from: {pattern!r} is not a valid regex ({e}).") from e
  for rule in assignment_map:
    if len(rule) != 2:
      raise UserError(f"train.init_from.assignment_map: {rule!r} must be a pair (regex, replacement or None).")


def _is_square_grid(shape: Shape) -> bool:
  return len(shape) == 2 and math.isqrt(shape[0]) ** 2 == shape[0]


def _absent(name: str, shape: Shape, source: Dict[str, Shape], rules: TransferRules) -> Optional[Action]:
  """The action for a parameter the checkpoint lacks: upcycled from a dense one, fresh, or None (an error)."""
  for pattern, replacement in rules.expert_stacks:
    if re.fullmatch(pattern, name):
      dense = re.sub(pattern, replacement, name)
      if dense in source and tuple(source[dense]) == tuple(shape[1:]):
        return Action(TILE, dense)
  if any(re.fullmatch(p, name) for p in rules.fresh_when_absent):
    return Action(FRESH)
  return None


def plan(source: Dict[str, Shape], target: Dict[str, Shape], rules: TransferRules,
         dont_load: Sequence[str] = (), assignment_map: Sequence[Tuple[str, Optional[str]]] = ()) -> Mapping:
  """Maps checkpoint parameters (name -> shape) onto the new model's; a UserError lists every problem at once."""
  _check_regexes(dont_load, assignment_map)
  matches = lambda patterns, name: any(re.fullmatch(p, name) for p in patterns)
  actions, missing, mismatched = {}, [], []
  for name, shape in sorted(target.items()):
    if matches(dont_load, name):
      actions[name] = Action(FRESH)
      continue
    rule = next((r for r in assignment_map if re.fullmatch(r[0], name)), None)
    if rule is not None and rule[1] is None:
      actions[name] = Action(FRESH)
      continue
    source_name = re.sub(rule[0], rule[1], name) if rule is not None else name
    if source_name not in source:
      absent = _absent(name, shape, source, rules)
      if absent is not None:
        actions[name] = absent
      else:
        missing.append(name if source_name == name else f"{name} (from {source_name})")
    elif tuple(source[source_name]) == tuple(shape):
      actions[name] = Action(LOAD, source_name)
    elif matches(rules.position_grids, name) and _is_square_grid(shape) and _is_square_grid(
        source[source_name]) and source[source_name][1] == shape[1]:
      actions[name] = Action(RESIZE, source_name)
    elif matches(rules.heads, name):
      actions[name] = Action(ZEROS)
    else:
      renamed = f" ({source_name})" if source_name != name else ""
      mismatched.append(f"{name}: checkpoint {tuple(source[source_name])}{renamed}, model {tuple(shape)}")
  if missing or mismatched:
    problems = []
    if missing:
      problems.append(f"{len(missing)} parameters of the model have no counterpart in the checkpoint: "
                      f"{_listing(missing, 20)}")
    if mismatched:
      problems.append(f"{len(mismatched)} have a different shape: {'; '.join(mismatched)}")
    raise UserError(f"train.init_from cannot initialise this model from the checkpoint: {'. '.join(problems)}. "
                    "Skip parameters with init_from.dont_load = ('regex', ...), rename them with "
                    "init_from.assignment_map = (('regex', 'replacement'), ...), or check that the checkpoint "
                    "is of the model you meant. Nothing was written.")
  used = {a.source for a in actions.values() if a.source is not None}
  return Mapping(actions, sorted(set(source) - used))
