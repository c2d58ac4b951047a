"""Test set-up: 8 host CPU devices before JAX starts, and a compilation cache shared by the test processes."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Several test processes (pytest-xdist workers, CLI subprocesses) compile for TPU topologies at once; none runs
# on a TPU, so none needs libtpu's one-process lock.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("SHARDLINE_COMPILATION_CACHE", os.path.join(_REPO, ".cache", "xla-tests"))

from shardline.launch import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

CPU_DEVICES = 8
runtime.set_cpu_xla_flags(CPU_DEVICES)
import jax  # noqa: E402  pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", CPU_DEVICES)
jax.config.update("jax_compilation_cache_dir", os.environ["SHARDLINE_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

import pytest  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def _clear_gin():
  """Every test starts and ends with an empty gin config."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  yield
  gin.clear_config()
