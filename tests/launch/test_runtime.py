"""Process-wide runtime settings: accelerator detection from the host's device files; XLA:CPU flags and thread pools."""
import os

from shardline.launch import runtime


def test_accelerator_attached_reads_the_device_files(tmp_path, monkeypatch):
  monkeypatch.setattr(runtime, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "accel*"), str(tmp_path / "nvidia[0-9]*")))
  assert not runtime.accelerator_attached()  # a CPU-only host: commands pin JAX to the CPU
  (tmp_path / "nvidiactl").touch()  # present on GPU hosts, but not a GPU itself
  assert not runtime.accelerator_attached()
  (tmp_path / "nvidia0").touch()
  assert runtime.accelerator_attached()


def test_simulated_devices_get_thread_pool_headroom(monkeypatch):
  monkeypatch.delenv("NPROC", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "")
  runtime.set_cpu_xla_flags(cpu_devices=8)
  assert int(os.environ["NPROC"]) >= runtime.THREADS_PER_SIMULATED_DEVICE * 8
  assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in os.environ["XLA_FLAGS"]
  monkeypatch.setenv("NPROC", "3")  # the user's own setting wins
  runtime.set_cpu_xla_flags(cpu_devices=8)
  assert os.environ["NPROC"] == "3"
