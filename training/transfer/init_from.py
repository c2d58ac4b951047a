"""`train.init_from`: start a run from another run's checkpoint, on any mesh, into a possibly different model.

MODEL_DIR's own latest checkpoint wins over `init_from` (a fine-tune that was interrupted resumes itself), which
wins over a fresh start; the trainer logs which one it used. The parameter mapping (skips, renames, new heads,
resized position embeddings, dtype casts, experts upcycled from a dense MLP) is in training/transfer/param_mapping.py.
Everything is checked, and every problem named, before the run writes anything.
"""
import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import gin
import jax
import jax.numpy as jnp

from shardline.core.errors import UserError
from shardline.partitioning.shardings import path_str
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.transfer import param_mapping
from shardline.training.state import run_setup as setup_lib
from shardline.training.state.train_state import TrainState


@gin.configurable("init_from", module="transfer")
@dataclasses.dataclass(frozen=True)
class InitFrom:
  """Where to initialise from, and how the checkpoint's parameters map onto the model.

  Attributes:
    path: the MODEL_DIR of a shardline run (a local folder, gs:// or s3://), or its checkpoints/ folder.
    step: the checkpoint step; None takes the latest.
    dont_load: regexes (full match) of the model's parameters to keep as initialised.
    assignment_map: (regex, replacement) rules naming the checkpoint parameter for the model's parameters that
      match; a replacement of None keeps them as initialised.
    optimizer_state: also load the optimizer state; it needs the same parameters and optimizer as the checkpoint.
  """
  path: str = gin.REQUIRED
  step: Optional[int] = None
  dont_load: Sequence[str] = ()
  assignment_map: Sequence[Tuple[str, Optional[str]]] = ()
  optimizer_state: bool = False


def _names_and_leaves(tree: Any) -> Dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {path_str(path): leaf for path, leaf in leaves}


def _nest(flat: Dict[str, Any]) -> Dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for name, value in flat.items():
    *parents, last = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = value
  return tree


def resize_grid(table: jax.Array, tokens: int) -> jax.Array:
  """A [positions, width] position embedding on a square grid, resized bilinearly to `tokens` positions (float32);
  the rule for a new image resolution, here and in `shardline convert import`."""
  old, new = math.isqrt(table.shape[0]), math.isqrt(tokens)
  width = table.shape[1]
  grid = jnp.asarray(table, jnp.float32).reshape(old, old, width)
  return jax.image.resize(grid, (new, new, width), method="bilinear").reshape(tokens, width)


def _resize_grid(table: jax.Array, tokens: int, dtype, sharding) -> jax.Array:
  """`resize_grid` into the new parameter's dtype and sharding."""
  return jax.jit(lambda t: resize_grid(t, tokens).astype(dtype), out_shardings=sharding)(table)


def _tile(dense: jax.Array, shape, dtype, sharding) -> jax.Array:
  """A dense parameter [...] copied into each of shape[0] experts: [experts, ...], in the experts' sharding."""
  return jax.jit(lambda d: jnp.broadcast_to(d.astype(dtype)[None], shape), out_shardings=sharding)(dense)


@dataclasses.dataclass
class Source:
  """A resolved checkpoint and the mapping of its parameters onto the model; `load` builds the state."""
  spec: InitFrom
  checkpointer: checkpoints_lib.Checkpointer
  step: int
  mapping: param_mapping.Mapping
  source_params: Dict[str, Any]  # checkpoint parameter name -> its array metadata (shape, dtype)

  def describe(self) -> str:
    """One log line naming the source and what was done with each parameter."""
    return f"Initialised from {self.checkpointer.directory} step {self.step}: {self.mapping.summary()}"

  def load(self, run: setup_lib.RunSetup, fresh: TrainState) -> TrainState:
    """`fresh` (the model's own initialisation, sharded) with the mapped checkpoint values in place."""
    abstract = _names_and_leaves(run.abstract_state.params)
    shardings = _names_and_leaves(run.state_sharding.params)
    wanted = {}
    for name, action in self.mapping.actions.items():
      if action.kind == param_mapping.LOAD and action.source not in wanted:
        wanted[action.source] = jax.ShapeDtypeStruct(abstract[name].shape, abstract[name].dtype,
                                                     sharding=shardings[name])
      elif action.kind in (param_mapping.RESIZE, param_mapping.TILE):
        meta = self.source_params[action.source]
        wanted[action.source] = jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=run.partitioner.replicated())
    target = {"params": _nest(wanted)}
    if self.spec.optimizer_state:
      target["opt_state"] = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                         run.abstract_state.opt_state, run.state_sharding.opt_state)
    restored = self.checkpointer.restore_parts(self.step, target)
    read = _names_and_leaves(restored["params"])
    fresh_params = _names_and_leaves(fresh.params)

    def value(path, _):
      name = path_str(path)
      action = self.mapping.actions[name]
      if action.kind == param_mapping.LOAD:
        return jax.device_put(read[action.source], shardings[name])
      if action.kind == param_mapping.RESIZE:
        return _resize_grid(read[action.source], abstract[name].shape[0], abstract[name].dtype, shardings[name])
      if action.kind == param_mapping.TILE:
        return _tile(read[action.source], abstract[name].shape, abstract[name].dtype, shardings[name])
      if action.kind == param_mapping.ZEROS:
        return jax.jit(lambda: jnp.zeros(abstract[name].shape, abstract[name].dtype), out_shardings=shardings[name])()
      return fresh_params[name]
    params = jax.tree_util.tree_map_with_path(value, fresh.params)
    opt_state = restored["opt_state"] if self.spec.optimizer_state else fresh.opt_state
    return fresh.replace(params=params, opt_state=opt_state)


def _check_optimizer_state(mapping: param_mapping.Mapping, source_meta: Any, run: setup_lib.RunSetup) -> None:
  renamed = [n for n, a in mapping.actions.items() if a.kind != param_mapping.LOAD or a.source != n]
  saved = [tuple(m.shape) for m in _names_and_leaves(source_meta.get("opt_state", {})).values()]
  wanted = [tuple(a.shape) for a in _names_and_leaves(run.abstract_state.opt_state).values()]
  if renamed or sorted(saved) != sorted(wanted):
    why = (f"{len(renamed)} parameters are not copied one to one ({', '.join(renamed[:4])})" if renamed else
           f"the checkpoint's optimizer state has {len(saved)} arrays and this run's {len(wanted)} (a different "
           "optimizer, or different frozen parameters)")
    raise UserError(f"train.init_from.optimizer_state = True needs the checkpoint's optimizer state to fit this "
                    f"run, but {why}. Set init_from.optimizer_state = False to start the optimizer afresh.")


def prepare(spec: InitFrom, run: setup_lib.RunSetup) -> Source:
  """Finds the checkpoint and maps its parameters onto the model; a UserError says what is wrong, before any
  array is read or anything is written."""
  checkpointer = checkpoints_lib.of_run(spec.path, "train.init_from path")
  steps = checkpointer.all_steps()
  if not steps:
    raise UserError(f"train.init_from: there is no committed checkpoint in {checkpointer.directory}. Give the "
                    "MODEL_DIR of a shardline run that has saved one (a folder holding checkpoints/<step>/), or "
                    "its checkpoints/ folder.")
  step = steps[-1] if spec.step is None else spec.step
  if step not in steps:
    raise UserError(f"train.init_from.step = {step}, but {checkpointer.directory} holds steps "
                    f"{', '.join(map(str, steps))}. Choose one of them, or None for the latest.")
  meta = checkpointer.state_metadata(step)
  source_params = _names_and_leaves(meta["params"])
  source = {name: tuple(m.shape) for name, m in source_params.items()}
  target = {name: tuple(a.shape) for name, a in _names_and_leaves(run.abstract_state.params).items()}
  mapping = param_mapping.plan(source, target, run.model.transfer_rules(), spec.dont_load, spec.assignment_map)
  if spec.optimizer_state:
    _check_optimizer_state(mapping, meta, run)
  return Source(spec, checkpointer, step, mapping, source_params)
