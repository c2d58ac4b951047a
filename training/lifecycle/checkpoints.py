"""Orbax checkpoints: asynchronous saves, keep-N, resume from the latest step, and guarded restores.

Each checkpoint holds the TrainState (which includes the RNG and the step, and therefore the data position
of the index-based pipeline) and a JSON record with the model's fingerprint. A restore into a different
model configuration stops with the differences named, before anything is written. Restores go straight
into the target shardings, so a checkpoint saved on one mesh restores onto any other.
"""
import json
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from absl import flags
from orbax.checkpoint._src.multihost import multihost as ocp_multihost
from orbax.checkpoint._src.path import atomicity

from shardline.core import paths
from shardline.core.errors import UserError, stderr_silenced
from shardline.partitioning.shardings import path_str
from shardline.training.lifecycle import orbax_s3

STATE = "state"
META = "meta"


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix.rstrip("."): d}


def fingerprint_diff(saved: Dict[str, Any], current: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
  """Keys whose values differ between two fingerprints: key -> (saved, current)."""
  a, b = _flatten(json.loads(json.dumps(saved))), _flatten(json.loads(json.dumps(current)))
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _use_coordination_service_barriers() -> None:
  """Makes orbax synchronise processes through the JAX coordination service rather than device all-gathers.

  Orbax's default barrier is a tiny all-gather over every device. On multi-process CPU runs gloo pairs
  collectives by the order in which each process issues them, so such a barrier issued while a peer is inside
  a train step's all-gather aborts both ("2048 vs 32" size mismatch). The coordination service's barriers are
  named, so they cannot be confused with the model's collectives on any backend.
  """
  name = ocp_multihost.EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER.name
  flags.FLAGS(["shardline", f"--{name}=true"], known_only=True)


def _shapes(params: Any) -> Dict[str, Tuple[int, ...]]:
  """Parameter name -> shape, of arrays or of checkpoint metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {path_str(path): tuple(leaf.shape) for path, leaf in leaves}


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class Checkpointer:
  """Saves and restores training state under `<model_dir>/checkpoints` (a local folder or a gs:// or s3:// URL).

  A read-only checkpointer (evaluation, analysis) creates nothing: a MODEL_DIR without checkpoints stays as it
  was.
  """

  def __init__(self, model_dir: str, keep: int = 3, save_every: int = 1000, async_save: bool = True,
               read_only: bool = False):
    self.directory = paths.display(paths.join(model_dir, "checkpoints"))
    if jax.process_count() > 1:
      _use_coordination_service_barriers()
    self.save_every = save_every
    self.read_only = read_only
    extra = {}
    if self.directory.startswith("s3://"):
      orbax_s3.enable()
      extra["temporary_path_class"] = atomicity.CommitFileTemporaryPath  # S3 cannot rename a directory
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=async_save, **extra)
    self._manager = None
    if read_only and not paths.exists(self.directory):
      return  # nothing to read, and nothing may be created
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    """The newest committed step, or None. Incomplete (in-flight or killed) saves are not counted."""
    return self._manager.latest_step() if self._manager is not None else None

  def all_steps(self):
    """Every committed step, oldest first."""
    return self._manager.all_steps() if self._manager is not None else []

  def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    """Starts an asynchronous save of `state`; refuses a state with non-finite values."""
    if not bool(_all_finite(state.params)):
      raise UserError(f"Refusing to checkpoint step {step}: the parameters contain NaN or Inf. The last good "
                      f"checkpoint in {self.directory} is kept. Lower the learning rate or enable clipping.")
    self._manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta, step=step))}), force=True)

  def read_meta(self, step: int) -> Dict[str, Any]:
    """The JSON record saved with `step`."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    except Exception as e:  # orbax raises many types for damaged files.
      raise self._corrupt(step, e) from e

  def restore(self, step: int, abstract_state: Any, state_sharding: Any) -> Any:
    """Restores `step` into the given shardings (any mesh), after checking that it holds the parameters the model
    builds."""
    self._check_parameters(step, abstract_state.params)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, state_sharding)
    # A damaged file fails one read while others are in flight; TensorStore then reports those on an event loop
    # orbax has closed, as tracebacks Python cannot catch. They say nothing beyond the error raised here.
    with stderr_silenced():
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))
      except Exception as e:  # orbax raises many types for damaged files.
        time.sleep(0.5)  # let the stray callbacks run while stderr is still silenced
        raise self._corrupt(step, e) from e
    return restored[STATE]

  def state_metadata(self, step: int) -> Any:
    """The saved state's tree of array metadata (shape, dtype) at `step`, without reading any array."""
    # orbax warns that the item folder has no step metadata file of its own (the step folder holds it).
    with stderr_silenced():
      try:
        return ocp.PyTreeCheckpointer().metadata(self._state_path(step)).item_metadata.tree
      except Exception as e:  # orbax raises many types for damaged files.
        raise self._corrupt(step, e) from e

  def restore_parts(self, step: int, target: Any) -> Any:
    """Restores a subtree of the saved state (nested dicts of jax.ShapeDtypeStruct with shardings; arrays are
    cast to the target dtypes), reading only those arrays."""
    with stderr_silenced():
      try:
        return ocp.PyTreeCheckpointer().restore(self._state_path(step), args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
      except Exception as e:  # orbax raises many types for damaged files.
        time.sleep(0.5)  # as in restore(): stray TensorStore callbacks run while stderr is silenced
        raise self._corrupt(step, e) from e

  def _check_parameters(self, step: int, abstract_params: Any) -> None:
    """Stops, naming the differences, when the checkpoint's parameter names or shapes are not the model's: a
    checkpoint written by a shardline whose layout of the same configuration differed."""
    saved, wanted = _shapes(self.state_metadata(step)["params"]), _shapes(abstract_params)
    if saved == wanted:
      return
    missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    reshaped = [f"{n}: checkpoint {saved[n]}, model {wanted[n]}" for n in sorted(set(saved) & set(wanted))
                if saved[n] != wanted[n]]
    listed = "; ".join(part for part in (
        f"the model has {len(missing)} the checkpoint lacks ({', '.join(missing[:6])})" if missing else "",
        f"the checkpoint has {len(extra)} the model lacks ({', '.join(extra[:6])})" if extra else "",
        f"{len(reshaped)} differ in shape ({'; '.join(reshaped[:4])})" if reshaped else "") if part)
    raise UserError(f"Checkpoint step {step} in {self.directory} holds other parameters than this model builds, "
                    f"although its configuration matches: {listed}. It was written by a shardline version that laid "
                    "this model out differently (MGDT's attention became one fused 'qkv' parameter on 2026-12-02). "
                    "Nothing was restored or overwritten: evaluate it with the version that wrote it, or train "
                    "again in a new MODEL_DIR.")

  def _state_path(self, step: int) -> epath.Path:
    return epath.Path(paths.join(self.directory, str(step), STATE))

  def check_fingerprint(self, step: int, current: Dict[str, Any]) -> None:
    """Stops if the checkpoint at `step` was written by a different model configuration."""
    saved = self.read_meta(step).get("fingerprint")
    if saved is None:
      raise UserError(f"Checkpoint step {step} in {self.directory} has no model fingerprint, so shardline "
                      "cannot tell whether it matches this configuration. Use a fresh MODEL_DIR.")
    diff = fingerprint_diff(saved, current)
    if diff:
      shown = "; ".join(f"{k}: checkpoint={a!r}, now={b!r}" for k, (a, b) in list(diff.items())[:8])
      more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
      raise UserError(f"MODEL_DIR {self.directory.rsplit('/', 1)[0]} holds checkpoints of a different model "
                      f"configuration: {shown}{more}. Nothing was restored or overwritten. Use a new "
                      "--gin.MODEL_DIR for this configuration, or restore the original settings.")

  def _corrupt(self, step: int, error: Exception) -> UserError:
    detail = (str(error).splitlines() or [""])[0].split(" See full TensorStore details")[0][:200]
    return UserError(f"Checkpoint step {step} in {self.directory} could not be read ({detail}). It is "
                     f"truncated or corrupt. shardline deleted nothing: move {paths.join(self.directory, str(step))}"
                     " aside to resume from the previous checkpoint, or use a new MODEL_DIR.")

  def wait(self) -> None:
    """Blocks until in-flight saves are committed."""
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()


def of_run(path: str, what: str) -> Checkpointer:
  """A read-only Checkpointer of another run, given its MODEL_DIR or that folder's checkpoints/ (local, gs:// or
  s3://); `what` names the setting in errors about the URL."""
  path = paths.check_url(path, what).rstrip("/")
  return Checkpointer(path[:-len("/checkpoints")] if path.endswith("/checkpoints") else path, read_only=True)
