"""Device meshes built from gin.

Every mesh has the four axes of `axes.MESH_AXES` (`data`, `fsdp`, `tensor`, `expert`), with size 1 where a
run does not use one. The ICI shape describes the devices of one slice (one host, one TPU slice); the DCN
shape describes how many slices are joined over the data-centre network (multi-slice TPU, multi-node GPU).
One ICI axis may be -1 to take whatever devices remain.
"""
import math
from typing import Dict, Optional, Sequence

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from shardline.partitioning import axes
from shardline.core.errors import UserError


def _fill_shape(ici: Dict[str, int], dcn: Dict[str, int], num_devices: int) -> Dict[str, int]:
  """Resolves a single -1 in the ICI shape and checks the product against the device count."""
  for name, size in list(ici.items()) + list(dcn.items()):
    if size == 0 or size < -1:
      raise UserError(f"Mesh axis {name!r} has size {size}; sizes must be positive, or -1 (ICI only) to take "
                      "the remaining devices. Fix partitioning.make_mesh.ici_*/dcn_* in your gin files.")
  if any(size == -1 for size in dcn.values()):
    raise UserError("A DCN mesh axis is -1; only one ICI axis may be -1. Set the dcn_* sizes explicitly.")
  free = [name for name, size in ici.items() if size == -1]
  if len(free) > 1:
    raise UserError(f"Mesh ICI axes {free} are all -1; at most one axis may take the remaining devices.")
  known = math.prod(s for s in ici.values() if s != -1) * math.prod(dcn.values())
  if free:
    if num_devices % known:
      raise UserError(
          f"Mesh axis {free[0]!r} is -1 but the other axes multiply to {known}, which does not divide the "
          f"{num_devices} available devices. Choose axis sizes whose product divides {num_devices}.")
    ici = dict(ici, **{free[0]: num_devices // known})
  total = math.prod(ici.values()) * math.prod(dcn.values())
  if total != num_devices:
    shape = " x ".join(f"{n}={ici[n] * dcn[n]}" for n in axes.MESH_AXES)
    raise UserError(
        f"The mesh ({shape}) needs {total} devices but {num_devices} are available "
        f"({jax.default_backend()} backend). Make the product of partitioning.make_mesh.ici_* and dcn_* "
        f"equal {num_devices}, or set one ICI axis to -1, e.g. --gin.partitioning.make_mesh.ici_fsdp=-1.")
  return ici


def _hybrid_grid(ici_shape, dcn_shape, devices) -> np.ndarray:
  """Devices laid out so that each DCN axis steps across slices (TPU slices, or processes elsewhere)."""
  by_process = not hasattr(devices[0], "slice_index")
  granules = len({d.process_index for d in devices}) if by_process else len({d.slice_index for d in devices})
  if granules == math.prod(dcn_shape):
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices, process_is_granule=by_process)
  if devices[0].platform != "cpu":
    raise UserError(
        f"The DCN mesh shape {dcn_shape} spans {math.prod(dcn_shape)} slices but the devices form {granules} "
        f"{'processes' if by_process else 'slices'}. Make the product of partitioning.make_mesh.dcn_* equal the "
        "number of slices (hosts for GPUs), or set them all to 1.")
  # A single CPU process rehearsing a multi-slice layout: slice s holds devices [s*n, (s+1)*n).
  blocks = np.asarray(devices).reshape(list(dcn_shape) + list(ici_shape))
  rank = len(ici_shape)
  order = [i for pair in zip(range(rank), range(rank, 2 * rank)) for i in pair]
  return blocks.transpose(order).reshape([d * i for d, i in zip(dcn_shape, ici_shape)])


@gin.configurable(module="partitioning")
def make_mesh(ici_data: int = 1, ici_fsdp: int = -1, ici_tensor: int = 1, ici_expert: int = 1,
              dcn_data: int = 1, dcn_fsdp: int = 1, dcn_tensor: int = 1, dcn_expert: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """Builds the (data, fsdp, tensor, expert) mesh.

  Args:
    ici_data, ici_fsdp, ici_tensor, ici_expert: axis sizes within a slice; one may be -1.
    dcn_data, dcn_fsdp, dcn_tensor, dcn_expert: how many slices each axis spans over DCN.
    devices: the devices to use; all of `jax.devices()` by default. `shardline plan` passes the
      compile-only devices of a TPU topology here.

  Returns:
    A `Mesh` with Auto axis types (sharding by annotation and propagation).
  """
  devices = list(jax.devices() if devices is None else devices)
  ici = dict(zip(axes.MESH_AXES, (ici_data, ici_fsdp, ici_tensor, ici_expert)))
  dcn = dict(zip(axes.MESH_AXES, (dcn_data, dcn_fsdp, dcn_tensor, dcn_expert)))
  ici = _fill_shape(ici, dcn, len(devices))
  ici_shape = [ici[n] for n in axes.MESH_AXES]
  dcn_shape = [dcn[n] for n in axes.MESH_AXES]
  if math.prod(dcn_shape) > 1:
    grid = _hybrid_grid(ici_shape, dcn_shape, devices)
  else:
    try:
      grid = mesh_utils.create_device_mesh(ici_shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
      grid = np.asarray(devices).reshape(ici_shape)
  return Mesh(grid, axes.MESH_AXES, axis_types=(AxisType.Auto,) * len(axes.MESH_AXES))


def axis_sizes(mesh: Mesh) -> Dict[str, int]:
  """Mesh axis name -> size."""
  return dict(zip(mesh.axis_names, mesh.devices.shape))


def describe(mesh: Mesh) -> str:
  """A short description such as 'fsdp=4 x tensor=2 (8 cpu devices)'."""
  used = [f"{n}={s}" for n, s in axis_sizes(mesh).items() if s > 1] or ["single device"]
  platform = mesh.devices.flat[0].platform
  return f"{' x '.join(used)} ({mesh.devices.size} {platform} devices)"


def data_parallel_size(mesh: Mesh, batch_axes: Sequence[str]) -> int:
  """How many ways the batch is split: the product of the mesh axes the batch is sharded over."""
  sizes = axis_sizes(mesh)
  return math.prod(sizes.get(a, 1) for a in batch_axes)
