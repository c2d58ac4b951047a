"""The precipitation data: the simulator is deterministic and its wind really moves the rain; the cached seqio
task; the Zarr loader on a store the test writes, and its errors."""
import pickle

import numpy as np
import pytest

from shardline.core.errors import UserError
from tests import fake_data
from tests import helpers
from shardline.tasks.precipitation import simulated_task, simulator, zarr_source
from tests import storage_servers

CONFIG = simulator.SimulatorConfig(domain=64, context=48, target=16, lead_times=(1, 4), initiation_rate=0.0,
                                   growth=0.0, saturation=0.0, noise=0.0, spin_up=2)


def test_simulator_is_deterministic_for_a_seed():
  a, b, c = simulator.simulate(CONFIG, 5), simulator.simulate(CONFIG, 5), simulator.simulate(CONFIG, 6)
  for name in ("radar", "state", "target"):
    np.testing.assert_array_equal(a[name], b[name])
  assert not np.array_equal(a["radar"], c["radar"])
  assert a["radar"].shape == (4, 48, 48) and a["state"].shape == (6, 48, 48) and a["target"].shape == (2, 16, 16)


def _centroid(field):
  """Periodic centroid (y, x) of a field on a square grid, by the circular mean."""
  n = field.shape[0]
  angles = 2 * np.pi * np.arange(n) / n
  weights = [field.sum(axis=1 - axis) for axis in (0, 1)]
  return np.array([np.angle(np.sum(w * np.exp(1j * angles))) * n / (2 * np.pi) for w in weights])


def test_wind_advects_the_cells_and_conserves_rain():
  """Without growth, decay, noise or new cells, rain is conserved (up to the clip of drizzle) and its centroid
  moves by the sum of the winds."""
  example = simulator.simulate(CONFIG, 11)
  frames, winds = example["frames"], example["winds"]
  for t in range(3):
    moved = (_centroid(frames[t + 1]) - _centroid(frames[t]) + 32) % 64 - 32
    np.testing.assert_allclose(moved, winds[t][::-1], atol=0.05)  # (dy, dx) = (v, u)
    np.testing.assert_allclose(frames[t + 1].sum(), frames[t].sum(), rtol=0.02)


def test_simulated_task_is_cached_and_disjoint(tmp_path):
  name = simulated_task.precipitation_simulation(num_train=6, num_test=3, cache_dir=str(tmp_path), domain=64,
                                                 context=48, target=16, lead_times=(1, 4))
  train, test = (helpers.read_split(name, split, tmp_path / "prepared") for split in ("train", "test"))
  assert train["radar"].shape == (6, 4, 48, 48) and test["target"].shape == (3, 2, 16, 16)
  assert len(list(tmp_path.glob("*.npz"))) == 2
  assert not any(np.array_equal(test["radar"][0], r) for r in train["radar"])
  again = helpers.read_split(name, "test", tmp_path / "prepared_again")  # from the simulator's cache
  np.testing.assert_array_equal(again["radar"], test["radar"])


def test_zarr_store_is_read_directly_window_by_window_and_split_by_time(tmp_path):
  fake_data.write_radar_store(tmp_path / "store")
  name = zarr_source.precipitation_zarr(path=str(tmp_path / "store"), context=32, target=16, input_frames=2,
                                        lead_times=(1, 3), spatial_stride=8, test_fraction=0.25)
  train, test = (helpers.read_split(name, split, tmp_path / "prepared") for split in ("train", "test"))
  assert not (tmp_path / "prepared").exists()  # a direct source: no prepared copy
  assert train["radar"].shape[1:] == (2, 32, 32) and train["state"].shape[1:] == (6, 32, 32)
  assert test["target"].shape[1:] == (2, 16, 16)
  # forecast times 1..8 x 2 x 2 windows; the last quarter of the times (7 and 8) is test
  assert len(train["radar"]) + len(test["radar"]) == 8 * 4 and len(test["radar"]) == 2 * 4
  read = lambda variable: zarr_source.open_stores(str(tmp_path / "store"))[variable].read().result()
  rain = read("precipitation")
  np.testing.assert_array_equal(train["radar"][0], rain[0:2, 0:32, 0:32])  # t = 1, corner (0, 0)
  np.testing.assert_array_equal(train["target"][0, 1], rain[4, 8:24, 8:24])  # lead 3, the central window
  np.testing.assert_array_equal(train["state"][5, 4], read("humidity")[2, 0:32, 8:40])  # t = 2, corner (0, 8)
  np.testing.assert_array_equal(test["radar"][3], rain[6:8, 8:40, 8:40])  # t = 7, corner (8, 8)
  # a loader worker gets a pickled copy, which reopens the store
  source = zarr_source.ZarrWindows(str(tmp_path / "store"), zarr_source.Geometry(32, 16, 2, (1, 3), 1, 8, 0.25),
                                   "test")
  copy = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(copy[5]["state"], test["state"][5])
  assert [e["target"].shape for e in copy.examples([0, 7])] == [(2, 16, 16)] * 2
  with pytest.raises(UserError, match="has no split 'validation'; it has train, test"):
    zarr_source.ZarrWindows(source.path, source.geometry, "validation")


def test_zarr_loader_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    zarr_source.precipitation_zarr(path=str(tmp_path / "absent"))
  fake_data.write_radar_store(tmp_path / "partial", skip=("humidity",))
  with pytest.raises(UserError, match="no readable Zarr v3 array 'humidity'"):
    zarr_source.open_stores(str(tmp_path / "partial"))
  fake_data.write_radar_store(tmp_path / "dims", dims=("t", "lat", "lon"))
  with pytest.raises(UserError, match="expected \\('time', 'y', 'x'\\)"):
    zarr_source.open_stores(str(tmp_path / "dims"))
  fake_data.write_radar_store(tmp_path / "short", steps=3)
  with pytest.raises(UserError, match=r"\[time, y, x\] = \(3, 40, 40\) is too small"):
    zarr_source.precipitation_zarr(path=str(tmp_path / "short"))


def test_zarr_store_in_an_s3_bucket(monkeypatch):
  with storage_servers.s3_server() as env:
    for name, value in env.items():
      monkeypatch.setenv(name, value)
    url = f"s3://{storage_servers.BUCKET}/radar.zarr"
    fake_data.write_radar_store(url)
    source = zarr_source.ZarrWindows(url, zarr_source.Geometry(32, 16, 2, (1, 3), 1, 8, 0.25), "train")
    assert len(source) == 6 * 4 and source[len(source) - 1]["radar"].shape == (2, 32, 32)
    with pytest.raises(UserError, match="does not exist"):
      zarr_source.open_stores(f"s3://{storage_servers.BUCKET}/absent.zarr")


def test_the_simulated_cache_must_be_local():
  with pytest.raises(UserError, match="cached on local disk"):
    simulated_task.precipitation_simulation(cache_dir="gs://bucket/cache")
