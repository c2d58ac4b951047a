"""Rules that map another library's tensors onto shardline's parameters and back, and the drivers that apply them.

A `Rule` maps a group of the other library's tensors (external names) to a group of shardline parameters, with a
function each way; most groups are one tensor each, but some are not (Hugging Face keeps the query, key and value
biases apart where shardline stacks them; timm fuses query, key and value into one matrix; a class token and its
position row become one shardline token). A per-block rule is applied to each encoder block: its external names
hold '{i}', and its shardline names are relative to the block, found under 'encoder/block_{i}/' or, with
scan_layers, as row i of 'encoder/layers/'.

Names of shardline parameters are paths with '/' between levels, as `shardline plan` lists them.
"""
import dataclasses
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
  """Tensors of another library <-> shardline parameters.

  Attributes:
    external: the other library's tensor names ('{i}' for the block index in per-block rules).
    shardline: shardline parameter names (relative to the block in per-block rules).
    to_shardline: external arrays (in order) -> a tuple of shardline arrays (in order).
    to_external: shardline arrays -> a tuple of external arrays.
    per_block: applied to every encoder block.
  """
  external: Tuple[str, ...]
  shardline: Tuple[str, ...]
  to_shardline: Callable[..., Tuple[np.ndarray, ...]]
  to_external: Callable[..., Tuple[np.ndarray, ...]]
  per_block: bool = False


def same(external: str, shardline: str, per_block: bool = False) -> Rule:
  """One tensor stored alike in both (biases, LayerNorm scales)."""
  return Rule((external,), (shardline,), lambda x: (x,), lambda x: (x,), per_block)


def transposed(external: str, shardline: str, per_block: bool = False) -> Rule:
  """A dense kernel stored [out, in] by PyTorch's Linear and [in, out] by shardline."""
  return Rule((external,), (shardline,), lambda w: (w.T,), lambda k: (k.T,), per_block)


def reshaped(external: str, shardline: str, external_shape: Callable[[Shape], Shape], shardline_shape: Shape,
             per_block: bool = False) -> Rule:
  """One tensor whose values are in the same order in both, with different shapes (external_shape: from the
  shardline shape)."""
  return Rule((external,), (shardline,), lambda x: (x.reshape(shardline_shape),),
              lambda x: (x.reshape(external_shape(x.shape)),), per_block)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the encoder blocks of a model live: unrolled ('encoder/block_{i}/...') or scanned ('encoder/layers/...'
  with a leading [depth] axis)."""
  depth: int
  scan: bool

  def block_name(self, i: int, name: str) -> str:
    """The parameter that holds block i's `name` (for scan, all blocks' stacked)."""
    return f"encoder/layers/{name}" if self.scan else f"encoder/block_{i}/{name}"


def instances(rules: Sequence[Rule], depth: int) -> Iterator[Tuple[Rule, int]]:
  """(rule, block) pairs, every per-block rule for blocks 0..depth-1 (block -1 for the others), in file order."""
  for rule in rules:
    for i in (range(depth) if rule.per_block else (-1,)):
      yield rule, i


def external_names(rule: Rule, i: int) -> Tuple[str, ...]:
  """The rule's external names for block i."""
  return tuple(n.format(i=i) for n in rule.external)


def external_shapes(rules: Sequence[Rule], layout: Layout, shapes: Dict[str, Shape]) -> Dict[str, Shape]:
  """The external tensors' names and shapes for a model whose parameters have `shapes`, in file order. Found by
  applying each rule to zeros of one block's shapes."""
  per_rule = {}
  for rule in rules:
    zeros = [np.zeros(_block_shape(shapes, layout, rule, name), np.float32) for name in rule.shardline]
    per_rule[id(rule)] = [tuple(x.shape) for x in rule.to_external(*zeros)]
  return {name: shape for rule, i in instances(rules, layout.depth)
          for name, shape in zip(external_names(rule, i), per_rule[id(rule)])}


def _block_shape(shapes: Dict[str, Shape], layout: Layout, rule: Rule, name: str) -> Shape:
  if not rule.per_block:
    return shapes[name]
  shape = shapes[layout.block_name(0, name)]
  return shape[1:] if layout.scan else shape


def to_shardline(rules: Sequence[Rule], layout: Layout, read: Callable[[str], np.ndarray]) -> Dict[str, np.ndarray]:
  """Shardline parameters (name -> array) from external tensors (`read(name)`); scanned blocks are filled into
  their stacked arrays one block at a time."""
  params: Dict[str, np.ndarray] = {}
  for rule, i in instances(rules, layout.depth):
    values = rule.to_shardline(*(read(n) for n in external_names(rule, i)))
    for name, value in zip(rule.shardline, values):
      if not rule.per_block:
        params[name] = value
      elif layout.scan:
        stacked = params.setdefault(layout.block_name(i, name), np.empty((layout.depth, *value.shape), value.dtype))
        stacked[i] = value
      else:
        params[layout.block_name(i, name)] = value
  return params


def to_external(rules: Sequence[Rule], layout: Layout,
                read: Callable[[str], np.ndarray]) -> Iterator[Tuple[str, np.ndarray]]:
  """(name, array) of every external tensor, in file order, from shardline parameters (`read(name)`). Each
  shardline parameter a rule needs is read once per rule (stacked blocks too) and dropped after it, so an export
  holds no more than one rule's parameters at a time."""
  for rule in rules:
    if not rule.per_block:
      yield from zip(rule.external, rule.to_external(*(read(n) for n in rule.shardline)))
      continue
    stacked: List[np.ndarray] = [read(layout.block_name(0, n)) for n in rule.shardline] if layout.scan else []
    for i in range(layout.depth):
      values = [s[i] for s in stacked] if layout.scan else [read(layout.block_name(i, n)) for n in rule.shardline]
      yield from zip(external_names(rule, i), rule.to_external(*values))
    del stacked


def listing(names: Sequence[str], limit: int = 8) -> str:
  """'a, b, c and 5 more'."""
  names = list(names)
  return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
