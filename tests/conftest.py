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


def pytest_collection_modifyitems(config, items):
  """Orders the tests longest first, otherwise as collected: the xdist groups (each a chain of tests one worker
  runs in turn), then the rest of the tests marked `full`, then the short ones, which fill the end. A long test
  or chain that starts last holds up the whole run."""
  del config
  items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None,
                               item.get_closest_marker("full") is None))


@pytest.fixture(autouse=True)
def _clear_gin():
  """Every test starts and ends with an empty gin config."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  yield
  gin.clear_config()


# Every process a test starts inherits this token in its environment; at the end of the session any such
# process still alive (a grain worker of a killed run, a storage server a test did not stop) fails the session.
SESSION_TOKEN = "SHARDLINE_TEST_SESSION"
SURVIVOR_GRACE_S = 10.0


def pytest_configure(config):
  if not hasattr(config, "workerinput"):  # the controlling process: xdist's workers inherit the token
    import uuid  # pylint: disable=g-import-not-at-top
    os.environ[SESSION_TOKEN] = uuid.uuid4().hex


def _processes_with_token(token: str):
  import psutil  # pylint: disable=g-import-not-at-top
  found = []
  for process in psutil.process_iter(["pid"]):
    if process.pid == os.getpid():
      continue
    try:
      if process.environ().get(SESSION_TOKEN) == token:
        found.append(process)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
      continue
  return found


def _alive(process) -> bool:
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
  """Fails the session when a process it started outlives it (after SURVIVOR_GRACE_S), and ends them."""
  del exitstatus
  import time  # pylint: disable=g-import-not-at-top
  token = os.environ.get(SESSION_TOKEN)
  if hasattr(session.config, "workerinput") or not token:
    return
  deadline = time.monotonic() + SURVIVOR_GRACE_S
  survivors = _processes_with_token(token)
  while survivors and time.monotonic() < deadline:
    time.sleep(0.5)
    survivors = [p for p in survivors if _alive(p)]
  if survivors:
    lines = [f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}" for p in survivors if _alive(p)]
    session.config.get_terminal_writer().line(
        "These processes started by the tests outlived the session (killed now):\n" + "\n".join(lines), red=True)
    for p in survivors:
      p.kill()
    session.exitstatus = 1
