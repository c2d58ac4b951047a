"""Frozen parameters (`optimizer.make_optimizer.frozen`): no updates, no optimizer state, no gradients computed.

Parameters are named by their path with '/' between levels, as `shardline plan` lists them
('encoder/layers/query', 'head_kernel'); a regex freezes every parameter it matches in full.
"""
import re
from typing import Any, Sequence, Tuple

import jax
import optax

from shardline.core.errors import UserError
from shardline.partitioning.shardings import path_str

FROZEN = "frozen"
TRAINABLE = "trainable"


def is_frozen(name: str, frozen: Sequence[str]) -> bool:
  return any(re.fullmatch(pattern, name) for pattern in frozen)


def check_patterns(params: Any, frozen: Sequence[str]) -> None:
  """Stops on a regex that is invalid or matches no parameter, and when nothing would be left to train."""
  names = [path_str(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern in frozen:
    try:
      re.compile(pattern)
    except re.error as e:
      raise UserError(f"optimizer.make_optimizer.frozen: {pattern!r} is not a valid regex ({e}).") from e
  unmatched = [p for p in frozen if not any(re.fullmatch(p, n) for n in names)]
  if unmatched:
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    raise UserError(f"optimizer.make_optimizer.frozen: {', '.join(repr(p) for p in unmatched)} match no "
                    f"parameter (each regex must match a whole name). The parameters are: {shown}. "
                    "`shardline plan` lists them all.")
  if all(is_frozen(n, frozen) for n in names):
    raise UserError(f"optimizer.make_optimizer.frozen = {tuple(frozen)!r} freezes every parameter, so there is "
                    "nothing to train. Leave at least one parameter (a head) out of it.")


def labels(params: Any, frozen: Sequence[str]) -> Any:
  """The tree of 'frozen' / 'trainable' labels that optax.multi_transform partitions by."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: FROZEN if is_frozen(path_str(path), frozen) else TRAINABLE, params)


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
  """`tx` for the trainable parameters; the frozen ones get zero updates and keep no optimizer state."""
  if not frozen:
    return tx

  def label_fn(params):
    check_patterns(params, frozen)
    return labels(params, frozen)
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, label_fn)


def stop_gradients(params: Any, frozen: Sequence[str]) -> Any:
  """Frozen parameters as constants for autodiff: their gradients are zeros that are never computed, and the
  backward pass stops where no trained parameter lies further back (a linear probe needs none through the
  encoder, even when its layers are a scanned loop, which XLA cannot prune afterwards)."""
  if not frozen:
    return params
  return jax.tree_util.tree_map_with_path(
      lambda path, p: jax.lax.stop_gradient(p) if is_frozen(path_str(path), frozen) else p, params)


def count(params: Any, frozen: Sequence[str]) -> Tuple[int, int]:
  """(trainable, total) parameter counts of a (possibly abstract) tree."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  total = sum(int(leaf.size) for _, leaf in leaves)
  trainable = sum(int(leaf.size) for path, leaf in leaves if not is_frozen(path_str(path), frozen))
  return trainable, total
