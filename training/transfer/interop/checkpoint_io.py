"""Imported weights written as a shardline checkpoint, and a checkpoint's parameters read back one at a time.

An import is saved as step 0 of a MODEL_DIR with training/lifecycle's Checkpointer and the model's fingerprint, so
`train.init_from` reads it onto any mesh like any run's checkpoint. It holds the parameters only (no optimizer
state: the fine-tune's optimizer starts afresh), so it is a source for init_from and for `shardline convert
export`, not a run to resume or evaluate.

An export reads a checkpoint's parameters one by one onto the host CPU, each whole (orbax gathers the shards of
a sharded checkpoint), so the host never holds more than the parameters the format conversion has in hand.
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import SingleDeviceSharding

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.models.base import BaseModel
from shardline.partitioning.shardings import path_str
from shardline.training.lifecycle import checkpoints as checkpoints_lib
from shardline.training.state.train_state import TrainState

Shape = Tuple[int, ...]
IMPORT_STEP = 0


def model_shapes(model: BaseModel) -> Dict[str, Shape]:
  """The model's parameter names and shapes, without allocating them."""
  params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(1)))
  return {name: tuple(leaf.shape) for name, leaf in _names(params).items()}


def _names(tree: Any) -> Dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {path_str(path): leaf for path, leaf in leaves}


def check_new_model_dir(model_dir: str, what: str = "--output") -> str:
  """`model_dir` checked as a place for a new checkpoint: refused when it already holds checkpoints."""
  model_dir = paths.check_url(model_dir, what)
  existing = paths.listdir(paths.join(model_dir, "checkpoints"))
  if existing:
    raise UserError(f"{what} = {model_dir} already holds checkpoints ({', '.join(existing[:4])}); shardline does "
                    "not overwrite them. Choose a new folder.")
  paths.check_writable(model_dir, what)
  return model_dir


def save_imported(model: BaseModel, params: Dict[str, np.ndarray], model_dir: str, provenance: Dict[str, Any]) -> str:
  """Saves `params` (flat names -> arrays, the model's full set) as checkpoint step 0 of `model_dir`, with the
  model's fingerprint and `provenance` in its JSON record; returns the step's folder."""
  tree = traverse_util.unflatten_dict({tuple(name.split("/")): jnp.asarray(value) for name, value in params.items()})
  state = TrainState(step=jnp.zeros((), jnp.int32), params=tree, opt_state=(), rng=jax.random.PRNGKey(0),
                     skipped=jnp.zeros((), jnp.int32))
  saver = checkpoints_lib.Checkpointer(model_dir, async_save=False)
  try:
    saver.save(IMPORT_STEP, state, {"fingerprint": model.fingerprint(), "imported_from": provenance})
  finally:
    saver.close()
  return paths.join(saver.directory, str(IMPORT_STEP))


class CheckpointParams:
  """A checkpoint's parameters, checked against a model and read one at a time onto the host.

  Attributes:
    directory: the checkpoints/ folder.
    step: the step read.
    shapes: parameter name -> shape (the model's, which the checkpoint's equal).
  """

  def __init__(self, model: BaseModel, model_dir: str, step: Optional[int] = None, what: str = "--input"):
    self._checkpointer = checkpoints_lib.of_run(model_dir, what)
    self.directory = self._checkpointer.directory
    steps = self._checkpointer.all_steps()
    if not steps:
      raise UserError(f"{what} = {model_dir}: there is no committed checkpoint in {self.directory}. Give the "
                      "MODEL_DIR of a shardline run or import (a folder holding checkpoints/<step>/).")
    self.step = steps[-1] if step is None else step
    if self.step not in steps:
      raise UserError(f"--step = {self.step}, but {self.directory} holds steps {', '.join(map(str, steps))}. "
                      "Choose one of them, or leave --step out for the latest.")
    saved = self._checkpointer.read_meta(self.step).get("fingerprint") or {}
    diff = checkpoints_lib.fingerprint_diff(saved, model.fingerprint())
    if diff:
      value = lambda v: "the default" if v is None else repr(v)  # LATER_FIELDS at their default are left out
      shown = "; ".join(f"{k}: checkpoint={value(a)}, gin={value(b)}" for k, (a, b) in list(diff.items())[:8])
      raise UserError(f"Checkpoint step {self.step} in {self.directory} was written by another model "
                      f"configuration than the gin files give: {shown}. Pass the gin files the run was trained (or "
                      "imported) with.")
    self.shapes = model_shapes(model)
    saved_shapes = {name: tuple(m.shape) for name, m in _names(
        self._checkpointer.state_metadata(self.step)["params"]).items()}
    if saved_shapes != self.shapes:
      differ = sorted(set(saved_shapes.items()) ^ set(self.shapes.items()))
      raise UserError(f"Checkpoint step {self.step} in {self.directory} holds other parameters than the model "
                      f"builds ({', '.join(f'{n} {s}' for n, s in differ[:6])}); it was written by a shardline "
                      "version that laid this model out differently. Export it with that version.")
    self._host = SingleDeviceSharding(jax.local_devices(backend="cpu")[0])

  def read(self, name: str) -> np.ndarray:
    """Parameter `name`, whole, as a float32 host array."""
    target = traverse_util.unflatten_dict({tuple(name.split("/")): jax.ShapeDtypeStruct(
        self.shapes[name], jnp.float32, sharding=self._host)})
    restored = self._checkpointer.restore_parts(self.step, {"params": target})["params"]
    return np.asarray(traverse_util.flatten_dict(restored)[tuple(name.split("/"))])
