"""A seqio ArrayRecord cache (what seqio's cache_tasks_main pipeline writes with output_format='arrayrecord') is
read in place: the same examples as the task, training through it, and its bad inputs stopped clearly.

apache_beam is not a shardline dependency, so the cache is written here as seqio's Beam pipeline writes it:
seqio.dict_to_tfexample records (with the pipeline's provenance features) in ArrayRecord shards named by Beam's
template, the info JSON of seqio.beam_utils.GetInfo, and COMPLETED.
"""
import json
import os
import pickle

import numpy as np
import pytest
import seqio

from shardline.core.errors import UserError
from shardline.data import seqio_cache
from shardline.data.settings import StreamSettings
from shardline.tasks import splits
from shardline.tasks import digits  # noqa: F401  registers the digits task
from tests import helpers


def write_like_seqio(cache_dir, task_name: str, split: str, shards: int, group_size: int = 1) -> str:
  """The seqio cache of a task's split under cache_dir, as seqio's pipeline lays it out; returns its folder."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  directory = seqio_cache.task_dir(str(cache_dir), task_name)
  os.makedirs(directory, exist_ok=True)
  examples = list(seqio.get_mixture_or_task(task_name).get_dataset(
      None, split=split, shuffle=False, use_cached=False).as_numpy_iterator())
  for shard in range(shards):
    writer = array_record_module.ArrayRecordWriter(
        os.path.join(directory, f"{split}.array_record-{shard:05d}-of-{shards:05d}"), f"group_size:{group_size}")
    for index in range(shard, len(examples), shards):
      provenance = {"provenance/task": task_name, "provenance/source_shard": "0",
                    "provenance/source_shard_index": 0, "provenance/index_within_shard": index}
      writer.write(seqio.dict_to_tfexample({**examples[index], **provenance}).SerializeToString())
    writer.close()
  features = {name: {"shape": [None] + list(np.shape(v))[1:] if np.ndim(v) else [],
                     "dtype": "string" if isinstance(v, bytes) else np.asarray(v).dtype.name}
              for name, v in examples[0].items()}
  with open(os.path.join(directory, f"info.{split}.json"), "w") as f:
    json.dump({"num_shards": shards, "features": features, "seqio_version": seqio.__version__}, f, indent=2,
              sort_keys=True)
  with open(os.path.join(directory, "COMPLETED"), "w") as f:
    f.write("")
  return directory


def _settings(tmp_path, cache_dirs):
  return StreamSettings(cache_dir=str(tmp_path / "prepared"), seqio_cache_dirs=tuple(map(str, cache_dirs)))


def test_the_cache_is_read_in_place_with_the_tasks_examples(tmp_path):
  directory = write_like_seqio(tmp_path / "seqio", "digits", "test", shards=3)
  source = splits.open_source("digits", "test", _settings(tmp_path, [tmp_path / "elsewhere", tmp_path / "seqio"]))
  assert isinstance(source, seqio_cache.SeqioCacheSource) and source.directory == directory
  assert not (tmp_path / "prepared").exists()  # nothing prepared
  # shard by shard in name order: shard 0 holds the task's examples 0, 3, 6, ... (120 of them)
  expected = list(seqio.get_mixture_or_task("digits").get_dataset(None, split="test", shuffle=False)
                  .as_numpy_iterator())
  assert len(source) == len(expected) == 359
  per_shard = [expected[s::3] for s in range(3)]
  order = [e for shard in per_shard for e in shard]
  for index in (0, 1, 119, 120, 358):
    got = source[index]
    assert set(got) == {"image", "label"} and got["image"].dtype == np.float32 and got["label"].dtype == np.int32
    np.testing.assert_array_equal(got["image"], order[index]["image"])
    assert got["label"] == order[index]["label"]
  batch = source.examples([358, 0, 120])
  np.testing.assert_array_equal(batch[0]["image"], source[358]["image"])
  copy = pickle.loads(pickle.dumps(source))  # as a loader worker gets it
  np.testing.assert_array_equal(copy[200]["image"], source[200]["image"])
  assert source.describe().endswith("(3 shard(s)), read directly")
  grouped = write_like_seqio(tmp_path / "grouped", "digits", "test", shards=2, group_size=2)
  assert "group size 2, so every read decompresses 2 records" in seqio_cache.SeqioCacheSource(grouped, "test")\
      .describe()
  with pytest.raises(UserError, match="stream.seqio_cache_dirs = gs://bucket/seqio: ArrayRecord shards are read "
                                      "with local file I/O"):
    StreamSettings(seqio_cache_dirs=("gs://bucket/seqio",))


@pytest.mark.full
def test_training_streams_from_a_seqio_cache(tmp_path):
  for split in ("train", "test"):
    write_like_seqio(tmp_path / "seqio", "digits", split, shards=2)
  model_dir = tmp_path / "run"
  result = helpers.run_shardline(*helpers.tiny_train_args(model_dir, 3), "--gin.stream.workers=1",
                                 f"--gin.stream.seqio_cache_dirs=['{tmp_path / 'seqio'}']",
                                 f"--gin.stream.cache_dir='{tmp_path / 'prepared'}'")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Data: 1,438 examples of the seqio ArrayRecord cache" in result.stdout + result.stderr
  assert not (tmp_path / "prepared").exists()
  assert sorted(helpers.train_metric(model_dir, "batch_fingerprint")) == [1, 2, 3]


def test_bad_caches_stop_with_what_is_wrong(tmp_path):
  settings = _settings(tmp_path, [tmp_path / "seqio"])
  directory = write_like_seqio(tmp_path / "seqio", "digits", "test", shards=2)
  os.remove(os.path.join(directory, "COMPLETED"))
  with pytest.raises(UserError, match="has no COMPLETED file: the job that writes it has not finished"):
    splits.open_source("digits", "test", settings)

  directory = write_like_seqio(tmp_path / "seqio", "digits", "test", shards=2)
  os.remove(os.path.join(directory, "test.array_record-00001-of-00002"))
  with pytest.raises(UserError, match=r"holds 1 test.array_record shard\(s\), but .* records 2: shards are "
                                      "missing"):
    splits.open_source("digits", "test", settings)

  directory = write_like_seqio(tmp_path / "seqio", "digits", "test", shards=2)
  info_path = os.path.join(directory, "info.test.json")
  with open(info_path) as f:
    info = json.load(f)
  info["features"]["label"]["dtype"] = "float32"
  with open(info_path, "w") as f:
    json.dump(info, f)
  with pytest.raises(UserError, match="does not hold the task's features: 'label' is float32, the task gives "
                                      "int32"):
    splits.open_source("digits", "test", settings)
  info["features"]["label"] = {"dtype": "int32", "shape": [None, None]}
  with open(info_path, "w") as f:
    json.dump(info, f)
  with pytest.raises(UserError, match=r"Feature 'label' .* shape \[None, None\]: shardline reads dense features"):
    splits.open_source("digits", "test", settings)

  directory = write_like_seqio(tmp_path / "seqio", "digits", "test", shards=2)
  shard = os.path.join(directory, "test.array_record-00000-of-00002")
  with open(shard, "r+b") as f:  # damage the records, keep the footer
    f.seek(200)
    f.write(b"\xff" * 64)
  source = splits.open_source("digits", "test", settings)
  with pytest.raises(UserError, match=r"Record 0 of the seqio cache shard .*test.array_record-00000-of-00002 "
                                      r"\(example 0\) cannot be read"):
    source[0]
