"""Named rule sets that map logical axes to mesh axes.

A rule set is an ordered tuple of `(logical_axis, mesh_axes)` pairs. When an array's logical axes are resolved
(`resolve_spec`), rules are applied in order of priority: a rule that names one of the array's logical axes
takes those of its mesh axes that are still free, and a mesh axis is used at most once per array. A logical
axis may appear in several rules, which act as fallbacks. This is what lets `embed` be sharded over `fsdp` in a
weight while an activation of shape (batch, length, embed), whose batch already took `fsdp`, keeps `embed`
whole; and what lets an expert buffer (expert, batch, ...) put experts on `expert` and the batch on the rest.

gin chooses a rule set by name (`partitioning.rule_set`); the sets themselves are code, here.
"""
from typing import Optional, Sequence, Tuple, Union

import gin
from jax.sharding import PartitionSpec

from shardline.partitioning import axes
from shardline.core.errors import UserError

MeshAxes = Union[None, str, Tuple[str, ...]]
Rules = Tuple[Tuple[str, MeshAxes], ...]

_BATCH_AXES = (axes.DATA_AXIS, axes.FSDP_AXIS)

DATA_PARALLEL: Rules = (
    (axes.BATCH, _BATCH_AXES),
)

FSDP: Rules = (
    (axes.BATCH, _BATCH_AXES),
    (axes.EMBED, axes.FSDP_AXIS),
    (axes.MLP, axes.FSDP_AXIS),
    (axes.HEADS, axes.FSDP_AXIS),
    (axes.CHANNELS, axes.FSDP_AXIS),
    (axes.VOCAB, axes.FSDP_AXIS),
)

# Fully sharded data parallel with Megatron-style tensor parallelism. Inside a block, heads and the MLP hidden
# width are split over `tensor`; at block boundaries the residual stream is split over `tensor` along its
# length (sequence parallelism), which is the layout the asynchronous parallel linear ops consume and produce.
FSDP_TENSOR: Rules = (
    (axes.BATCH, _BATCH_AXES),
    (axes.HEADS, axes.TENSOR_AXIS),
    (axes.MLP, axes.TENSOR_AXIS),
    (axes.VOCAB, axes.TENSOR_AXIS),
    (axes.LENGTH, axes.TENSOR_AXIS),
    (axes.EMBED, axes.FSDP_AXIS),
    (axes.CHANNELS, axes.FSDP_AXIS),
)

# Expert parallelism: experts over `expert`, everything else as in FSDP. Outside MoE layers the batch is split
# over `expert` too, so every device computes; in an expert buffer [expert, batch, ...] the experts come first.
EXPERT: Rules = (
    (axes.EXPERT, axes.EXPERT_AXIS),
    (axes.BATCH, (axes.DATA_AXIS, axes.FSDP_AXIS, axes.EXPERT_AXIS)),
    (axes.EMBED, axes.FSDP_AXIS),
    (axes.MLP, axes.FSDP_AXIS),
    (axes.HEADS, axes.FSDP_AXIS),
    (axes.VOCAB, axes.FSDP_AXIS),
)

# Spatial partitioning: activations split over height (`fsdp`) and width (`tensor`); the batch over `data`.
SPATIAL: Rules = (
    (axes.BATCH, axes.DATA_AXIS),
    (axes.HEIGHT, axes.FSDP_AXIS),
    (axes.WIDTH, axes.TENSOR_AXIS),
)

RULE_SETS = {
    "data": DATA_PARALLEL,
    "fsdp": FSDP,
    "fsdp_tensor": FSDP_TENSOR,
    "expert": EXPERT,
    "spatial": SPATIAL,
}


@gin.configurable(module="partitioning")
def rule_set(name: str = "fsdp") -> Rules:
  """Returns the named rule set; gin binds `partitioning.rule_set.name`."""
  if name not in RULE_SETS:
    raise UserError(
        f"Unknown partitioning rule set {name!r} (partitioning.rule_set.name). "
        f"Choose one of: {', '.join(sorted(RULE_SETS))}.")
  return RULE_SETS[name]


def _as_tuple(mesh_axes: MeshAxes) -> Tuple[str, ...]:
  if mesh_axes is None:
    return ()
  return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def resolve_spec(logical_axes: Sequence[Optional[str]], rules: Rules,
                 mesh_axis_sizes: Optional[dict] = None) -> PartitionSpec:
  """Maps an array's logical axes to a PartitionSpec under `rules`.

  Args:
    logical_axes: one logical axis name (or None) per array dimension.
    rules: a rule set, in priority order.
    mesh_axis_sizes: if given, mesh axes of size 1 are dropped, so specs stay readable.

  Returns:
    The PartitionSpec, one entry per dimension.
  """
  for name in logical_axes:
    if name is not None and name not in axes.ALL:
      raise ValueError(f"Logical axis {name!r} is not in partitioning/axes.py; add it there first.")
  assigned = [()] * len(logical_axes)
  used = set()
  for logical, mesh_axes in rules:
    wanted = tuple(a for a in _as_tuple(mesh_axes)
                   if a not in used and (mesh_axis_sizes is None or mesh_axis_sizes.get(a, 1) > 1))
    if not wanted:
      continue
    for dim, name in enumerate(logical_axes):
      if name == logical and not assigned[dim]:
        assigned[dim] = wanted
        used.update(wanted)
        break
  entries = [None if not a else (a[0] if len(a) == 1 else a) for a in assigned]
  return PartitionSpec(*entries)


def rule_for(logical_axis: str, rules: Rules) -> MeshAxes:
  """The first rule's mesh axes for `logical_axis` (for error messages), or None."""
  for logical, mesh_axes in rules:
    if logical == logical_axis:
      return mesh_axes
  return None


def rule_set_name(rules: Rules) -> str:
  """The registered name of a rule set, or 'custom'."""
  for name, candidate in RULE_SETS.items():
    if candidate == rules:
      return name
  return "custom"
