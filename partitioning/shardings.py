"""Parameter and optimizer-state shardings derived from logical axes, with divisibility checks.

Models create parameters with `flax.linen.with_logical_partitioning`, so an abstract init (`jax.eval_shape`)
yields boxes that carry each parameter's logical axes. From those this module derives NamedShardings under a
`Partitioner`, and refuses, with the parameter path, logical axis and rule named, any dimension that the mesh
would not divide evenly. Optimizer states follow their parameters: a state leaf whose path ends with a
parameter's path and has the same shape is sharded like it; anything else (counts, factored statistics) is
replicated.
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError

PyTree = Any


def path_str(path: Sequence[Any]) -> str:
  """'params/Block_0/attn/query/kernel' from a jax key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.spmd.LogicallyPartitioned)


def logical_axes_tree(boxed: PyTree) -> PyTree:
  """The logical axes of every leaf of a (possibly abstract) boxed tree; None for unannotated leaves."""
  return jax.tree.map(lambda x: tuple(x.names) if _is_box(x) else None, boxed, is_leaf=_is_box)


def check_divisible(path: str, shape: Tuple[int, ...], logical_axes: Sequence[Optional[str]],
                    spec: PartitionSpec, partitioner: Partitioner) -> None:
  """Raises a UserError when a sharded dimension is not divisible by its mesh axes."""
  sizes = mesh_lib.axis_sizes(partitioner.mesh)
  for dim, entry in enumerate(spec):
    if entry is None:
      continue
    mesh_axes = (entry,) if isinstance(entry, str) else tuple(entry)
    ways = int(np.prod([sizes[a] for a in mesh_axes]))
    if shape[dim] % ways:
      logical = logical_axes[dim] if logical_axes else None
      rule = rules_lib.rule_for(logical, partitioner.rules) if logical else None
      raise UserError(
          f"Parameter {path} has shape {tuple(shape)}; its dimension {dim} (logical axis {logical!r}) is "
          f"split {ways} ways over mesh axes {mesh_axes} by the rule {logical!r} -> {rule!r} of rule set "
          f"{rules_lib.rule_set_name(partitioner.rules)!r}, but {shape[dim]} is not divisible by {ways}. "
          f"Change the model size so that {logical!r} is a multiple of {ways}, use a mesh where "
          f"{'x'.join(mesh_axes)} divides {shape[dim]}, or choose another partitioning.rule_set.name.")


def param_shardings(abstract_boxed: PyTree, partitioner: Partitioner) -> PyTree:
  """NamedShardings for an abstract boxed parameter tree, validated for divisibility."""
  def one(path, leaf):
    if _is_box(leaf):
      names, value = tuple(leaf.names), leaf.value
    else:
      names, value = (None,) * len(leaf.shape), leaf
    spec = partitioner.spec(names)
    check_divisible(path_str(path), value.shape, names, spec, partitioner)
    return NamedSharding(partitioner.mesh, spec)
  return jax.tree_util.tree_map_with_path(one, abstract_boxed, is_leaf=_is_box)


def _drop_one_axis(param_shape, shape, sharding: NamedSharding) -> Optional[NamedSharding]:
  """A factored statistic (the parameter's shape with one axis removed, as Adafactor keeps) is sharded like the
  parameter on the axes it kept."""
  if len(shape) != len(param_shape) - 1:
    return None
  spec = tuple(sharding.spec) + (None,) * (len(param_shape) - len(sharding.spec))
  for dropped in range(len(param_shape)):
    if param_shape[:dropped] + param_shape[dropped + 1:] == shape:
      return NamedSharding(sharding.mesh, PartitionSpec(*(spec[:dropped] + spec[dropped + 1:])))
  return None


def follow_params(abstract_state: PyTree, abstract_params: PyTree, params_sharding: PyTree,
                  partitioner: Partitioner) -> PyTree:
  """Shardings for an optimizer state (or any tree) whose leaves shadow parameters.

  A leaf whose key path ends with a parameter's key path and has that parameter's shape gets the parameter's
  sharding; one with the parameter's shape less one axis (a factored second moment) keeps the sharding of the
  remaining axes; every other leaf is replicated.
  """
  by_path: Dict[Tuple[str, ...], Tuple[Tuple[int, ...], NamedSharding]] = {}
  flat_params = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat_shardings = jax.tree.leaves(params_sharding)
  for (path, leaf), sharding in zip(flat_params, flat_shardings):
    by_path[tuple(path_str(path).split("/"))] = (tuple(leaf.shape), sharding)
  lengths = sorted({len(k) for k in by_path}, reverse=True)

  def one(path, leaf):
    parts = tuple(path_str(path).split("/"))
    shape = tuple(getattr(leaf, "shape", ()))
    for n in lengths:
      hit = by_path.get(parts[-n:]) if len(parts) >= n else None
      if hit is None:
        continue
      param_shape, sharding = hit
      if param_shape == shape:
        return sharding
      factored = _drop_one_axis(param_shape, shape, sharding)
      if factored is not None:
        return factored
    return partitioner.replicated()
  return jax.tree_util.tree_map_with_path(one, abstract_state)


def describe_shardings(abstract_params: PyTree, logical: PyTree, shardings: PyTree) -> str:
  """A table of parameter paths, shapes, logical axes and mesh shardings, one line per parameter."""
  rows = []
  flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat_logical = jax.tree.leaves(logical, is_leaf=lambda x: x is None or isinstance(x, tuple))
  flat_shardings = jax.tree.leaves(shardings)
  for (path, leaf), names, sharding in zip(flat, flat_logical, flat_shardings):
    rows.append((path_str(path), str(tuple(leaf.shape)), str(names), str(tuple(sharding.spec))))
  widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
  return "\n".join(f"{p:<{widths[0]}}  {s:<{widths[1]}}  {n:<{widths[2]}}  {m}" for p, s, n, m in rows)
