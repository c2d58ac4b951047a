"""The training state, its abstract shape, and its shardings."""
from typing import Any, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from shardline.models.base import BaseModel
from shardline.partitioning import shardings as shardings_lib
from shardline.partitioning.context import Partitioner, use_partitioner


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes, and everything a checkpoint holds.

  Attributes:
    step: the number of updates applied.
    params: the model parameters (unboxed).
    opt_state: the optimizer state.
    rng: a raw uint32[2] PRNG key; step keys are folded from it, so resuming reproduces them.
    skipped: how many updates were skipped because the loss or gradients were not finite.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  skipped: jax.Array


def _init_fn(model: BaseModel, tx: optax.GradientTransformation, batch_spec, seed: int):
  def init():
    rng = jax.random.PRNGKey(seed)
    params_rng, state_rng = jax.random.split(rng)
    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in batch_spec.items()}
    params = nn.unbox(model.init(params_rng, batch))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng, skipped=jnp.zeros((), jnp.int32))
  return init


def abstract_state(model: BaseModel, tx: optax.GradientTransformation, batch_spec, partitioner: Partitioner,
                   seed: int = 0) -> Tuple[TrainState, TrainState, Any]:
  """The abstract state, its shardings, and the params' logical axes, without allocating anything.

  Raises a UserError naming the parameter if a rule does not divide one of its dimensions.
  """
  with use_partitioner(partitioner):
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(seed), {
        k: jnp.zeros(v.shape, v.dtype) for k, v in batch_spec.items()}))
    params_sharding = shardings_lib.param_shardings(boxed, partitioner)
    logical = shardings_lib.logical_axes_tree(boxed)
    abstract = jax.eval_shape(_init_fn(model, tx, batch_spec, seed))
  opt_sharding = shardings_lib.follow_params(abstract.opt_state, abstract.params, params_sharding, partitioner)
  replicated = partitioner.replicated()
  state_sharding = TrainState(step=replicated, params=params_sharding, opt_state=opt_sharding, rng=replicated,
                              skipped=replicated)
  return abstract, state_sharding, logical


def init_state(model: BaseModel, tx: optax.GradientTransformation, batch_spec, partitioner: Partitioner,
               state_sharding: TrainState, seed: int = 0) -> TrainState:
  """Initialises the state directly into its shardings (no parameter is ever whole on one device)."""
  with use_partitioner(partitioner):
    return jax.jit(_init_fn(model, tx, batch_spec, seed), out_shardings=state_sharding)()
