"""Process-wide runtime settings: accelerator detection from the host's device files."""
from shardline.launch import runtime


def test_accelerator_attached_reads_the_device_files(tmp_path, monkeypatch):
  monkeypatch.setattr(runtime, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "accel*"), str(tmp_path / "nvidia[0-9]*")))
  assert not runtime.accelerator_attached()  # a CPU-only host: commands pin JAX to the CPU
  (tmp_path / "nvidiactl").touch()  # present on GPU hosts, but not a GPU itself
  assert not runtime.accelerator_attached()
  (tmp_path / "nvidia0").touch()
  assert runtime.accelerator_attached()
