"""The jitted train and eval steps, with explicit input and output shardings."""
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from shardline.models.base import BaseModel, Metrics
from shardline.partitioning.context import Partitioner, use_partitioner
from shardline.training.state import frozen as frozen_lib
from shardline.training.state import microbatches as microbatches_lib
from shardline.training.state.train_state import TrainState


class StudentLoss(Protocol):
  """A loss that replaces the model's own and takes extra step inputs (a distillation teacher's parameters:
  training/transfer/distill.py)."""

  def loss_and_metrics(self, student: BaseModel, params: Any, teacher_params: Any, batch: Dict[str, jax.Array],
                       rng: jax.Array) -> Tuple[jax.Array, Metrics]:
    """The scalar loss and the metrics of one batch."""


def _tree_where(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def train_step_fn(model: BaseModel, tx: optax.GradientTransformation, schedule: Callable,
                  nan_at_step: int = -1,
                  microbatches: int = 1,
                  frozen: Sequence[str] = (),
                  distill: Optional[StudentLoss] = None) -> Callable[..., Tuple[TrainState, Metrics]]:
  """One optimisation step, optionally accumulated over strided microbatches (training/state/microbatches.py).

  An update whose loss or gradient norm is not finite is never applied: the state keeps its previous values,
  the step counter still advances (so the data moves on), and `skipped` counts it. Whether a skip stops the run
  is the trainer's policy.

  Args:
    model: the model.
    tx: the optimizer.
    schedule: learning rate as a function of the step, for the metrics.
    nan_at_step: fault injection for tests of the non-finite policy; -1 disables it.
    microbatches: k > 1 splits the global batch into k microbatches and applies one update from their mean
      gradient; the caller has checked that k divides every device's share of the batch.
    frozen: regexes of parameters that are not trained (the optimizer's); no gradient flows into them, so the
      backward pass computes only what the trained parameters need, and the gradient norm covers those.
    distill: distil from a teacher (training/transfer/distill.py); the step then takes the teacher's parameters as a third
      input.
  """
  def step(state: TrainState, batch: Dict[str, jax.Array], teacher_params: Any = None) -> Tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params, examples=batch, key=rng):
      params = frozen_lib.stop_gradients(params, frozen)
      if distill is None:
        loss, metrics = model.loss_and_metrics(params, examples, key)
      else:
        loss, metrics = distill.loss_and_metrics(model, params, teacher_params, examples, key)
      if nan_at_step >= 0:
        loss = jnp.where(state.step == nan_at_step, jnp.nan, loss)
      return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    if microbatches == 1:
      (loss, metrics), grads = grad_fn(state.params)
    else:
      (loss, metrics), grads = microbatches_lib.accumulate_gradients(
          grad_fn, state.params, batch, rng, microbatches, model.batch_axes())
    grad_norm = optax.tree.norm(grads)
    finite = jnp.logical_and(jnp.isfinite(loss), jnp.isfinite(grad_norm))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=_tree_where(finite, params, state.params),
        opt_state=_tree_where(finite, opt_state, state.opt_state),
        skipped=state.skipped + jnp.logical_not(finite).astype(jnp.int32))
    one = jnp.ones((), jnp.float32)
    metrics = dict(metrics)
    metrics["loss"] = (loss.astype(jnp.float32), one)  # The optimised scalar; models report parts by name.
    metrics["grad_norm"] = (grad_norm.astype(jnp.float32), one)
    metrics["learning_rate"] = (jnp.asarray(schedule(state.step), jnp.float32), one)
    metrics["nonfinite"] = (jnp.logical_not(finite).astype(jnp.float32), one)
    return new_state, metrics
  return step


class PartitionedFunction:
  """A jitted function that is always traced with its partitioner current, so models' constraints apply."""

  def __init__(self, fn: Callable, partitioner: Partitioner, **jit_kwargs):
    self.partitioner = partitioner
    self._jitted = jax.jit(fn, **jit_kwargs)

  def __call__(self, *args):
    with use_partitioner(self.partitioner):
      return self._jitted(*args)

  def lower(self, *args) -> jax.stages.Lowered:
    with use_partitioner(self.partitioner):
      return self._jitted.lower(*args)


def jit_train_step(step: Callable, partitioner: Partitioner, state_sharding: TrainState,
                   batch_sharding: Dict[str, Any], teacher_sharding: Any = None) -> PartitionedFunction:
  """The train step, jitted with explicit shardings (a distilling step also takes the teacher's parameters);
  the input state is donated."""
  in_shardings = (state_sharding, batch_sharding) + (() if teacher_sharding is None else (teacher_sharding,))
  return PartitionedFunction(step, partitioner, in_shardings=in_shardings,
                             out_shardings=(state_sharding, partitioner.replicated()), donate_argnums=(0,))


def jit_eval_step(model: BaseModel, partitioner: Partitioner, params_sharding: Any,
                  batch_sharding: Dict[str, Any]) -> PartitionedFunction:
  """Evaluation metrics of one batch, jitted."""
  return PartitionedFunction(model.eval_metrics, partitioner, in_shardings=(params_sharding, batch_sharding),
                             out_shardings=partitioner.replicated())
