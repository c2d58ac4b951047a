"""Process-wide JAX settings that must be made before the backends start, bound by gin as `runtime`."""
import glob
import os
from typing import Optional

import gin
import jax

# XLA:CPU's concurrency-optimised scheduler lets simulated devices enter independent collectives (the rings
# of the collective matmuls, say) in different orders; on a machine with few cores they then starve each
# other's rendezvous until XLA aborts. Scheduling in program order avoids it. And XLA:CPU aborts the process
# when the simulated devices do not all reach a collective within 40 s, which happens on a busy machine with
# more device threads than cores (two 8-device test workers on 2 cores): wait up to 10 minutes instead, which
# still ends a real deadlock. Only the CPU backend reads these.
CPU_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",
                 "--xla_cpu_collective_call_terminate_timeout_seconds=600",
                 "--xla_cpu_collective_timeout_seconds=600")


# XLA:CPU sizes its two thread pools (the one that launches each device's part of a program, and the one that
# runs a part's operations, collectives included) at max(cores, devices). Each collective blocks a thread of the
# second pool until every simulated device has joined it, and each launch blocks a thread of the first until its
# part is done. With one thread per device, two collectives in flight on one device (independent permutes of the
# collective matmuls, say), or two programs in flight, can leave another device no thread to reach the
# collective: a deadlock. On the 2-core machine it hung 3 of 5 runs of the async-linear parity training, and 0 of
# 5 with 4 threads per device. XLA reads the pool size from $NPROC; give it THREADS_PER_SIMULATED_DEVICE threads
# per simulated device.
THREADS_PER_SIMULATED_DEVICE = 4


def set_cpu_xla_flags(cpu_devices: Optional[int] = None) -> None:
  """Adds CPU_XLA_FLAGS to $XLA_FLAGS (unless the user set them) and, for more than one simulated CPU device,
  sets $NPROC (unless set) to give XLA:CPU's thread pools headroom; call before any device is used."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_XLA_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
  if cpu_devices and cpu_devices > 1:
    os.environ.setdefault("NPROC", str(max(os.cpu_count() or 1, THREADS_PER_SIMULATED_DEVICE * cpu_devices)))


# Device files through which TPUs (accel, vfio), NVIDIA GPUs and AMD GPUs (kfd) are attached to a host.
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def accelerator_attached() -> bool:
  """Whether this host has any TPU or GPU device file; without one, JAX can only use the CPU."""
  return any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES)


@gin.configurable("runtime")
def configure(cpu_devices: Optional[int] = None, compilation_cache_dir: Optional[str] = None,
              matmul_precision: str = "default") -> None:
  """Applies runtime settings.

  Args:
    cpu_devices: how many host CPU devices to simulate (the CPU mesh in tests and demos). No effect on GPU/TPU.
    compilation_cache_dir: persistent XLA compilation cache; $SHARDLINE_COMPILATION_CACHE or
      ~/.cache/shardline/xla by default. '' disables it.
    matmul_precision: jax_default_matmul_precision.
  """
  set_cpu_xla_flags(cpu_devices)
  if not os.environ.get("JAX_PLATFORMS") and not accelerator_attached():
    # Otherwise the installed libtpu (the `tpu` extra, for ahead-of-time compiles) probes for a TPU and logs
    # errors about TPU worker hostnames before JAX falls back to the CPU.
    jax.config.update("jax_platforms", "cpu")
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  if compilation_cache_dir is None:
    compilation_cache_dir = os.environ.get("SHARDLINE_COMPILATION_CACHE",
                                           os.path.expanduser("~/.cache/shardline/xla"))
  if compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if matmul_precision != "default":
    jax.config.update("jax_default_matmul_precision", matmul_precision)
