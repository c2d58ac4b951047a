"""Optimizers from gin: AdamW or Adafactor, warmup + cosine decay, global-norm clipping, frozen parameters."""
from typing import Callable, NamedTuple, Sequence, Tuple

import gin
import jax.numpy as jnp
import optax

from shardline.core.errors import UserError
from shardline.training.state import frozen as frozen_lib

OPTIMIZERS = ("adamw", "adafactor")


class Optimizer(NamedTuple):
  """The optax transformation, its learning-rate schedule, and the regexes of the parameters it leaves alone."""
  tx: optax.GradientTransformation
  schedule: Callable
  frozen: Tuple[str, ...]


def _check_range(name: str, value: float, low: float, low_inclusive: bool, high: float = float("inf")) -> None:
  ok = (value >= low if low_inclusive else value > low) and value <= high
  if not ok:
    bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if high != float("inf") else "")
    raise UserError(f"optimizer.{name} = {value} is out of range: it must be {bound}. Fix "
                    f"--gin.make_optimizer.{name} or the value in your gin files.")


@gin.configurable(module="optimizer")
def make_optimizer(total_steps: int, name: str = "adamw", learning_rate: float = 1e-3,
                   warmup_steps: int = 0, end_learning_rate_fraction: float = 0.0, weight_decay: float = 1e-4,
                   b1: float = 0.9, b2: float = 0.999, clip_norm: float = 1.0,
                   moments_dtype: str = "float32", frozen: Sequence[str] = ()) -> Optimizer:
  """Builds the optimizer and its learning-rate schedule.

  Args:
    total_steps: training steps; the cosine decays over those after warmup (the trainer passes it).
    name: 'adamw' or 'adafactor'.
    learning_rate: peak learning rate.
    warmup_steps: linear warmup from 0.
    end_learning_rate_fraction: final learning rate as a fraction of the peak.
    weight_decay: decoupled weight decay.
    b1, b2: moment decay rates (Adafactor uses b1 only when > 0, and b2 as its decay rate).
    clip_norm: global gradient-norm clip; 0 disables clipping.
    moments_dtype: dtype of the first moment ('bfloat16' halves its memory).
    frozen: regexes of parameter names ('encoder/.*') that are not trained: no updates, no optimizer state, and
      their gradients are not computed (training/state/frozen.py). Each must match at least one parameter.

  Returns:
    The transformation, the schedule as a function of the step, and the frozen regexes.
  """
  if name not in OPTIMIZERS:
    raise UserError(f"Unknown optimizer {name!r} (optimizer.make_optimizer.name); choose one of {OPTIMIZERS}.")
  _check_range("learning_rate", learning_rate, 0.0, low_inclusive=False)
  _check_range("warmup_steps", warmup_steps, 0, low_inclusive=True)
  _check_range("weight_decay", weight_decay, 0.0, low_inclusive=True)
  _check_range("clip_norm", clip_norm, 0.0, low_inclusive=True)
  _check_range("b1", b1, 0.0, low_inclusive=True, high=1.0)
  _check_range("end_learning_rate_fraction", end_learning_rate_fraction, 0.0, low_inclusive=True, high=1.0)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=learning_rate * end_learning_rate_fraction)
  mu_dtype = jnp.dtype(moments_dtype)
  if name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mu_dtype=mu_dtype)
  else:
    tx = optax.adafactor(schedule, decay_rate=b2, momentum=b1 if b1 > 0 else None,
                         weight_decay_rate=weight_decay or None, dtype_momentum=mu_dtype)
  if clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  frozen = tuple(frozen)
  return Optimizer(frozen_lib.freeze(tx, frozen), schedule, frozen)
