"""Parameter creation with logical axes attached, so shardings can be derived from the rules."""
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def param(module: nn.Module, name: str, init: Callable, shape: Sequence[int], logical_axes: Sequence[str],
          dtype=jnp.float32) -> jax.Array:
  """Creates (or fetches) a parameter annotated with its logical axes."""
  if len(shape) != len(logical_axes):
    raise ValueError(f"{name}: shape {tuple(shape)} and logical axes {tuple(logical_axes)} differ in rank.")
  return module.param(name, nn.with_logical_partitioning(init, tuple(logical_axes)), tuple(shape), dtype)


def dtype_of(name) -> jnp.dtype:
  """'bfloat16' / 'float32' (as gin gives them) -> a jnp dtype."""
  if isinstance(name, str):
    try:
      return jnp.dtype({"bf16": "bfloat16", "f32": "float32"}.get(name, name))
    except TypeError as e:
      raise ValueError(f"Unknown dtype {name!r}; use 'float32' or 'bfloat16'.") from e
  return jnp.dtype(name)


def lecun_normal() -> Callable:
  """Fan-in scaled normal init for kernels of any rank whose last axes are outputs."""
  return nn.initializers.lecun_normal()


def zeros() -> Callable:
  return nn.initializers.zeros


def ones() -> Callable:
  return nn.initializers.ones
