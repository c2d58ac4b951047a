"""What train, eval and plan share: the partitioner, optimizer, abstract state and shardings of a run."""
import dataclasses
from typing import Any, Callable, Dict, Tuple

import optax
from jax.sharding import NamedSharding

from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.partitioning import context
from shardline.partitioning.context import Partitioner
from shardline.training.state import frozen as frozen_lib
from shardline.training.state import optimizer as optimizer_lib
from shardline.training.state import train_state


@dataclasses.dataclass
class RunSetup:
  """A model placed on a mesh, with its optimizer and the shardings of its state and batches."""
  model: BaseModel
  partitioner: Partitioner
  tx: optax.GradientTransformation
  schedule: Callable
  frozen: Tuple[str, ...]
  abstract_state: train_state.TrainState
  state_sharding: train_state.TrainState
  logical_axes: Any
  batch_sharding: Dict[str, NamedSharding]
  eval_batch_sharding: Dict[str, NamedSharding]

  def trainable(self) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    return frozen_lib.count(self.abstract_state.params, self.frozen)

  def fingerprint(self) -> Dict[str, Any]:
    """Identifies the model architecture and parameter layout, for checkpoint compatibility."""
    return self.model.fingerprint()


def build(model: BaseModel, total_steps: int, global_batch: int, seed: int = 0,
          devices=None) -> RunSetup:
  """Builds the mesh and rules from gin, the optimizer, and the abstract state with its shardings.

  Validation happens here, before any compute: the mesh against the devices and every parameter dimension
  against the rules.
  """
  partitioner = Partitioner(mesh_lib.make_mesh(devices=devices), rules_lib.rule_set(),
                            unroll_collective_loops=context.collectives_need_unrolled_loops())
  tx, schedule, frozen = optimizer_lib.make_optimizer(total_steps=total_steps)
  batch_spec = model.batch_spec(global_batch)
  abstract, sharding, logical = train_state.abstract_state(model, tx, batch_spec, partitioner, seed)
  axes_by_feature = model.batch_axes()
  batch_sharding = {name: partitioner.sharding(axes_by_feature[name]) for name in batch_spec}
  # Evaluation batches carry every feature the model names (labels, a per-example 'weight' that is 0 for
  # padding), not just the training inputs.
  eval_batch_sharding = {name: partitioner.sharding(logical) for name, logical in axes_by_feature.items()}
  return RunSetup(model, partitioner, tx, schedule, frozen, abstract, sharding, logical, batch_sharding,
                  eval_batch_sharding)
