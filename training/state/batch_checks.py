"""Checks of the global batch against the mesh, before anything runs: it must split evenly over the
data-parallel axes, and into the microbatches of gradient accumulation on every device."""
from shardline.core.errors import UserError
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning.context import Partitioner


def check_batch_divisible(global_batch: int, partitioner: Partitioner, what: str = "train.batch_size") -> None:
  """Stops when the global batch does not split evenly over the data-parallel mesh axes."""
  batch_axes = partitioner.mesh_axes_of("batch")
  ways = mesh_lib.data_parallel_size(partitioner.mesh, batch_axes)
  if global_batch <= 0 or global_batch % ways:
    raise UserError(
        f"{what} = {global_batch} is not divisible by the data-parallel size {ways} (the batch is split over "
        f"mesh axes {' x '.join(batch_axes) or '(none)'} of the mesh {mesh_lib.describe(partitioner.mesh)}). "
        f"Use a multiple of {ways}, e.g. {max(ways, (global_batch // ways) * ways) or ways}.")


def check_microbatches(global_batch: int, microbatches: int, partitioner: Partitioner) -> None:
  """Stops unless `microbatches` divides every device's share of the global batch (strided microbatches keep
  each device's rows on that device, so each microbatch needs the same number of rows on every device)."""
  ways = mesh_lib.data_parallel_size(partitioner.mesh, partitioner.mesh_axes_of("batch"))
  per_device = global_batch // ways
  if microbatches < 1 or per_device % microbatches:
    divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
    raise UserError(
        f"train.microbatches = {microbatches} does not divide the per-device batch: the global batch "
        f"{global_batch} is split {ways} ways over the mesh {mesh_lib.describe(partitioner.mesh)}, so each device "
        f"holds {per_device} examples. Choose microbatches from {divisors}, or change train.batch_size.")
