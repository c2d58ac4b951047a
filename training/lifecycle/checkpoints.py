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

from shardline.core import paths
from shardline.core.errors import UserError, stderr_silenced
from shardline.partitioning.shardings import path_str
from shardline.training.lifecycle import orbax_stores
from shardline.training.lifecycle import storage

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
  was. With a `store` (training), saves go through its outage handling (storage.py): a save that fails because
  the store is down is retried, on a fresh orbax manager, until the store answers or the storage timeout ends.
  """

  def __init__(self, model_dir: str, keep: int = 3, save_every: int = 1000, async_save: bool = True,
               read_only: bool = False, store: Optional[storage.Store] = None):
    self.directory = paths.display(paths.join(model_dir, "checkpoints"))
    if jax.process_count() > 1:
      _use_coordination_service_barriers()
    self.save_every = save_every
    self.read_only = read_only
    self._store = store
    extra = {}
    if paths.is_remote(self.directory):
      orbax_stores.enable()
    if self.directory.startswith("s3://"):
      extra["temporary_path_class"] = ocp.path.atomicity.CommitFileTemporaryPath  # S3 cannot rename a directory
    timeout = store.timeout_s if store is not None else storage.DEFAULT_TIMEOUT_S
    # Directories are created before save() returns, so a store that is down fails the save at once, in this
    # thread; and the background commit gives up after the storage timeout instead of orbax's 20 minutes.
    async_options = ocp.AsyncOptions(timeout_secs=int(timeout) + 1, create_directories_asynchronously=False)
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                                 enable_async_checkpointing=async_save, async_options=async_options,
                                                 **extra)
    self._manager = None
    self._failed = False  # a save failed: orbax's manager keeps raising its error, so the next attempt reopens
    self._last_started: Optional[int] = None  # the newest step whose save was started
    if read_only and not paths.exists(self.directory):
      return  # nothing to read, and nothing may be created
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    if store is not None:
      store.last_committed = self._manager.latest_step()
      store.committed_probe = self.known_committed

  def latest_step(self) -> Optional[int]:
    """The newest committed step, or None. Incomplete (in-flight or killed) saves are not counted."""
    return self._manager.latest_step() if self._manager is not None else None

  def all_steps(self):
    """Every committed step, oldest first."""
    return self._manager.all_steps() if self._manager is not None else []

  def save(self, step: int, state: Any, meta: Dict[str, Any], wait: bool = False) -> None:
    """Saves `state` as step `step` (in the background unless `wait`); refuses a state with non-finite values.
    With a store, an outage is retried (storage.py) and `wait` also commits through it."""
    if not bool(_all_finite(state.params)):
      raise UserError(f"Refusing to checkpoint step {step}: the parameters contain NaN or Inf. The last good "
                      f"checkpoint in {self.directory} is kept. Lower the learning rate or enable clipping.")

    def attempt() -> None:
      self._wait_for_previous()
      try:
        self._manager.save(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta, step=step))}), force=True)
        self._last_started = step
        if wait:
          self._manager.wait_until_finished()
          self._committed(step)
      except Exception:  # pylint: disable=broad-except  whatever orbax raises, its manager now holds the error
        self._failed = True
        raise
    if self._store is None:
      attempt()
    else:
      self._store.run(f"saving checkpoint {step}", attempt)

  def _wait_for_previous(self) -> None:
    """Waits for the previous (background) save to commit. If it did not, that step is simply not a checkpoint:
    with a store, the outage is noted and this save goes on, on a fresh orbax manager (the old one keeps raising
    its stored error); a failure that is not the store's is raised again by the next synchronous save or by
    close(). Without a store (evaluation, tools) the error is raised here."""
    if self._failed:
      self._manager = ocp.CheckpointManager(self.directory, options=self._options)
      self._failed = False
    previous = self._manager.latest_step()
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  orbax raises what its threads raised
      if self._store is None:
        raise
      self._store.note(f"committing checkpoint {previous}", e)
      self._manager = ocp.CheckpointManager(self.directory, options=self._options)
      return
    self._committed(previous)

  def known_committed(self) -> Tuple[Optional[int], Optional[int]]:
    """(the newest step known to be committed, a newer step whose save started and may or may not have been
    committed), without waiting. A background save that has finished counts once it is checked to have
    succeeded; one that ended with an error may still have committed before it (orbax finalizes after the commit)."""
    committed = self._store.last_committed if self._store is not None else None
    if self._manager is not None and not self._failed and not self._manager.is_saving_in_progress():
      try:
        self._manager.wait_until_finished()  # returns at once: nothing is in progress
        self._committed(self._last_started)
        committed = self._last_started
      except Exception:  # pylint: disable=broad-except  that save ended with an error
        self._failed = True
    uncertain = self._last_started if self._last_started is not None and self._last_started != committed else None
    return committed, uncertain

  def _committed(self, step: Optional[int]) -> None:
    if self._store is not None and step is not None:
      self._store.last_committed = step

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
    """Blocks until in-flight saves are committed; with a store, a commit the outage cut off is not retried here
    (the state it saved is gone): the next save writes a newer step."""
    if self._manager is None:
      return
    step = self._manager.latest_step()
    if self._store is None:
      self._manager.wait_until_finished()
      return
    try:
      self._manager.wait_until_finished()
      self._committed(step)
    except Exception as e:  # pylint: disable=broad-except
      self._failed = True
      if not storage.is_transient(e):
        raise

  def close(self) -> None:
    """Waits for in-flight saves, then releases orbax's manager."""
    if self._manager is not None:
      self.wait()
      if not self._failed:
        self._manager.close()

  def abandon(self) -> None:
    """Lets go of orbax's manager without waiting for an in-flight save (the store is gone: the run is ending)."""
    self._manager = None


def of_run(path: str, what: str) -> Checkpointer:
  """A read-only Checkpointer of another run, given its MODEL_DIR or that folder's checkpoints/ (local, gs:// or
  s3://); `what` names the setting in errors about the URL."""
  path = paths.check_url(path, what).rstrip("/")
  return Checkpointer(path[:-len("/checkpoints")] if path.endswith("/checkpoints") else path, read_only=True)
