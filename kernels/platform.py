"""The platform a kernel is being compiled for."""
import jax


def target_platform() -> str:
  """'tpu', 'gpu' or 'cpu': the platform of the mesh set with `jax.set_mesh` when there is one (a TPU topology's
  compile-only devices in `shardline plan`, on a CPU-only machine), otherwise JAX's default backend. Kernels
  choose implementations by it, so a plan compiles what the pod will run."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None)
  if not mesh.empty and device is not None:
    return device.platform
  return jax.default_backend()
