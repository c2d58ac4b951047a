"""Shared test helpers: tolerances, tiny configs, meshes, and running the CLI in a subprocess."""
import os
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from shardline.models.vit22b.config import ViT22BConfig
from shardline.partitioning import axes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The one dtype-keyed tolerance table: (rtol, atol) for comparisons across meshes and implementations.
TOLERANCES = {
    "float32": (2e-5, 2e-5),
    "bfloat16": (2e-2, 2e-2),
}


def tolerance(dtype, scale: float = 1.0) -> dict:
  """{'rtol': ..., 'atol': ...} for a dtype (name or jnp dtype), optionally loosened by `scale`."""
  rtol, atol = TOLERANCES[jax.numpy.dtype(dtype).name]
  return {"rtol": rtol * scale, "atol": atol * scale}


def tiny_vit(**overrides) -> ViT22BConfig:
  """A tiny ViT-22B for 8x8 digits with 8 heads, so a tensor axis of 8 divides them."""
  base = dict(num_classes=10, image_size=8, channels=1, patch_size=2, width=64, depth=2, mlp_dim=128,
              num_heads=8, head_dim=8)
  base.update(overrides)
  return ViT22BConfig(**base)


def mesh(data=1, fsdp=1, tensor=1, expert=1, devices=None) -> Mesh:
  """A (data, fsdp, tensor, expert) mesh over the first devices."""
  shape = (data, fsdp, tensor, expert)
  devices = np.asarray(devices if devices is not None else jax.devices()[:int(np.prod(shape))])
  return Mesh(devices.reshape(shape), axes.MESH_AXES, axis_types=(AxisType.Auto,) * 4)


def run_shardline(*args: str, timeout: float = 600, env: dict = None) -> subprocess.CompletedProcess:
  """Runs `python -m shardline.launch.cli <args>` in a subprocess from the repository root."""
  full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
  return subprocess.run([sys.executable, "-m", "shardline.launch.cli", *args], capture_output=True, text=True,
                        timeout=timeout, env=full_env, cwd=REPO)
