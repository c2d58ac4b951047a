"""`shardline data prepare` and prepared splits: resumable after a SIGKILL with identical shards, and every bad
input (missing, truncated or damaged shards, another preprocessing, an undecodable image) stopped clearly."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.data import prepare, prepared, records
from shardline.data.settings import StreamSettings
from shardline.tasks import digits, registry, splits  # noqa: F401  digits registers its task
from tests import helpers
from tests.data import slow_task  # noqa: F401  registers slow_digits

SHARDS = 6
_task = registry.get_task


def _checksums(directory):
  return {shard["file"]: shard["sha256"] for shard in prepared.read_manifest(directory)["shards"]}


@pytest.mark.full
def test_a_prepare_killed_mid_write_resumes_to_identical_shards(tmp_path):
  clean = prepare.prepare(_task(slow_task.NAME), "train", str(tmp_path / "clean"), num_shards=SHARDS, workers=1, quiet=True)
  directory = prepare.locate(_task(slow_task.NAME), "train", str(tmp_path / "killed"))[1]
  code = ("from tests.data import slow_task; from shardline.data import prepare; from shardline.tasks import registry; "
          f"prepare.prepare(registry.get_task('{slow_task.NAME}'), 'train', {str(tmp_path / 'killed')!r}, num_shards={SHARDS}, "
          "workers=1, quiet=True)")
  process = subprocess.Popen([sys.executable, "-c", code], cwd=helpers.REPO, env=helpers.subprocess_env())
  deadline = time.time() + 120
  while not (os.path.isdir(directory) and any(n.endswith(".array_record.json") for n in os.listdir(directory))):
    assert process.poll() is None and time.time() < deadline, "the prepare ended before its first shard"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  done = [n for n in os.listdir(directory) if n.endswith(".array_record.json")]
  assert 1 <= len(done) < SHARDS, done  # killed between shards, with some written and some not
  with pytest.raises(UserError, match="No prepared data"):
    prepared.PreparedSource(directory)  # a half-prepared split never reads as complete

  again = prepare.prepare(_task(slow_task.NAME), "train", str(tmp_path / "killed"), num_shards=SHARDS, workers=2,
                          quiet=True)
  assert _checksums(again) == _checksums(clean)
  assert not [n for n in os.listdir(again) if ".tmp-" in n]  # the killed writer's temporary file is gone
  source = prepared.PreparedSource(again)
  assert source.features["image"]["encoding"] == records.PNG  # uint8 images are stored as PNG
  assert source[0]["image"].shape == (16, 16, 1) and source[0]["image"].dtype == np.uint8
  assert len(source) == 1438


@pytest.fixture
def digits_split(tmp_path):
  return prepare.prepare(_task("digits"), "test", str(tmp_path), num_shards=2, quiet=True)


def _first_shard(directory):
  return os.path.join(directory, prepared.read_manifest(directory)["shards"][0]["file"])


def test_a_truncated_shard_is_named_and_prepare_rewrites_only_it(digits_split, tmp_path):
  shard = _first_shard(digits_split)
  before = _checksums(digits_split)
  with open(shard, "r+b") as f:
    f.truncate(1000)
  with pytest.raises(UserError, match=r"test-00000-of-00002.array_record is 1,000 bytes, but its manifest says"):
    prepared.PreparedSource(digits_split)
  second_mtime = os.stat(os.path.join(digits_split, "test-00001-of-00002.array_record")).st_mtime_ns
  prepare.prepare(_task("digits"), "test", str(tmp_path), quiet=True)
  assert _checksums(digits_split) == before
  assert os.stat(os.path.join(digits_split, "test-00001-of-00002.array_record")).st_mtime_ns == second_mtime


def test_a_damaged_record_is_named_by_shard_and_record(digits_split):
  shard = _first_shard(digits_split)
  data = bytearray(open(shard, "rb").read())
  for offset in range(1000, 20000, 500):
    data[offset] ^= 0xFF
  open(shard, "wb").write(bytes(data))
  source = prepared.PreparedSource(digits_split)  # same size: found when read, by riegeli's chunk hashes
  with pytest.raises(UserError, match=r"Record \d+ of shard .*test-00000-of-00002.array_record \(example \d+\) "
                                      r"cannot be read: .*hash mismatch"):
    source.examples(range(len(source)))


def test_a_missing_shard(digits_split):
  os.remove(_first_shard(digits_split))
  with pytest.raises(UserError, match="test-00000-of-00002.array_record of a prepared split is missing"):
    prepared.PreparedSource(digits_split)


def test_another_preprocessing_is_named_and_a_missing_split_says_how_to_prepare(digits_split, tmp_path):
  manifest_path = os.path.join(digits_split, prepared.MANIFEST)
  manifest = json.load(open(manifest_path))
  os.rename(digits_split, digits_split.rsplit(".", 1)[0] + ".0123456789")
  manifest["fingerprint"]["preprocessors"] = ["an older preprocessing"]
  json.dump(manifest, open(digits_split.rsplit(".", 1)[0] + ".0123456789/" + prepared.MANIFEST, "w"))
  settings = StreamSettings(cache_dir=str(tmp_path), prepare_on_first_use=False)
  with pytest.raises(UserError) as error:
    splits.open_source("digits", "test", settings)
  message = str(error.value)
  assert "is not prepared under stream.cache_dir" in message and "shardline data prepare" in message
  assert "made by a different task version or preprocessing" in message
  assert "preprocessors: the cache has ['an older preprocessing'], the task now gives []" in message
  with pytest.raises(UserError, match="has no split 'validation'; it has train, test"):
    splits.open_source("digits", "validation", settings)


def test_an_image_that_fails_to_decode_is_named(tmp_path):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  path = tmp_path / "train-00000-of-00001.array_record"
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  good = records.encode({"image": np.zeros((8, 8, 1), np.uint8), "label": np.int32(0)}, {"image": records.PNG})
  writer.write(good)
  writer.write(records.encode({"image": np.frombuffer(b"not an image", np.uint8), "label": np.int32(1)}, {}))
  writer.close()
  (tmp_path / prepared.MANIFEST).write_text(json.dumps({
      "fingerprint": {}, "features": {"image": {"encoding": "png"}, "label": {"encoding": None}},
      "shards": [{"file": path.name, "examples": 2, "bytes": path.stat().st_size, "sha256": "unused"}]}))
  source = prepared.PreparedSource(str(tmp_path))
  assert source[0]["image"].shape == (8, 8, 1)
  with pytest.raises(UserError, match=r"The image of the record 1 of shard .*train-00000-of-00001.array_record "
                                      r"\(example 1\) fails to decode \(UnidentifiedImageError"):
    source[1]


def test_training_on_an_unprepared_split_stops_before_writing(tmp_path):
  model_dir = tmp_path / "run"
  result = helpers.run_cli_in_process(*helpers.tiny_train_args(model_dir, 2),
                                      "--gin.stream.prepare_on_first_use=False",
                                      f"--gin.stream.cache_dir='{tmp_path / 'empty'}'")
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.count("shardline: error:") == 1 and "Traceback" not in result.stderr
  assert "split 'train' is not prepared" in result.stderr
  assert not model_dir.exists()


def test_byte_strings_of_different_lengths_in_different_shards(tmp_path):
  """Encoded images are byte strings whose longest one sets a shard's dtype ('|S84923' here, '|S91911' there):
  the shards still agree on the feature, and every example reads back whole."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  name = "shardline_test_variable_bytes"
  payloads = [b"x" * (10 + 7 * i) for i in range(12)]
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({"blob": payloads}), splits=["train"]),
        preprocessors=[], output_features={"blob": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False,
                                                                 dtype=tf.string, rank=0)})
  directory = prepare.prepare(_task(name), "train", str(tmp_path), num_shards=3, workers=1, quiet=True)
  source = prepared.PreparedSource(directory)
  assert sorted(bytes(source[i]["blob"]) for i in range(len(source))) == sorted(payloads)
