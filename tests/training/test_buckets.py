"""MODEL_DIR in a bucket, against real object-store servers started on 127.0.0.1 (the GCS emulator and moto's S3
server): a run trains, checkpoints, is killed, resumes from the bucket and evaluates, with every output in the
bucket and nothing written locally; and each way a bucket can be wrong stops before training with one paragraph."""
import concurrent.futures
import os
import re
import signal
import socket
import subprocess

import pytest

from tests import helpers
from tests import storage_servers

SERVERS = {"gs": storage_servers.gcs_emulator, "s3": storage_servers.s3_server}


def _closed_port_url() -> str:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.full
@pytest.mark.parametrize("store", sorted(SERVERS))
def test_a_run_in_a_bucket_is_killed_resumes_and_evaluates(tmp_path, store):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  with SERVERS[store]() as env:
    model_dir = f"{store}://{storage_servers.BUCKET}/runs/tiny"
    args = helpers.tiny_train_args(model_dir, 6, "--gin.train.checkpointing.async_save=False")
    # The host stalls before step 5: by then step 3's checkpoint is committed (saves are synchronous here).
    process = subprocess.Popen(helpers.shardline_command(*args, "--gin.train.faults.stall=(4, 600)"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=helpers.subprocess_env(env), cwd=cwd)
    seen = []
    for line in process.stdout:
      seen.append(line)
      if line.startswith("step 4 "):
        process.send_signal(signal.SIGKILL)  # a preemption with no notice
        break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert f"MODEL_DIR {model_dir}" in "".join(seen)

    resumed = helpers.run_shardline(*args, env=env, cwd=cwd)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    # A healthy bucket run logs no error or warning lines (the C++ libraries' absl format: E1204 ..., W1204 ...).
    assert not re.search(r"^[EW]\d{4} ", resumed.stderr, re.M), resumed.stderr[-3000:]
    assert "Resuming from checkpoint step 3 in " + model_dir + "/checkpoints" in resumed.stdout
    evaluated = helpers.run_shardline("eval", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin",
                                      f"--gin.MODEL_DIR='{model_dir}'", env=env, cwd=cwd)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    accuracy = re.search(r"accuracy ([\d.]+)%", evaluated.stdout).group(1)
    assert f"step 6 | eval_accuracy {accuracy}%" in resumed.stdout
    assert f"Evaluated checkpoint step 6 of {model_dir}" in evaluated.stdout

    objects = storage_servers.list_objects(env, "runs/tiny/")
  names = {o[len("runs/tiny/"):] for o in objects}
  for expected in ("config.gin", "operative_config.gin", "metrics/train.jsonl", "metrics/eval.jsonl",
                   "metrics/goodput.jsonl", "checkpoints/3/_CHECKPOINT_METADATA", "checkpoints/6/_CHECKPOINT_METADATA"):
    assert expected in names, (expected, sorted(names)[:40])
  assert any(n.startswith("train/events.out.tfevents") for n in names)
  assert any(n.startswith("checkpoints/6/state/") for n in names)  # the arrays, through TensorStore
  assert not any(".shardline-write-check" in n for n in names)  # the pre-flight probe cleans up
  assert os.listdir(cwd) == []  # nothing local, no folder named 'gs:' or 's3:'


def _train(model_dir, env, cwd):
  return helpers.run_shardline(*helpers.tiny_train_args(model_dir, 2), env=env, cwd=cwd)


@pytest.mark.full
@pytest.mark.parametrize("store", sorted(SERVERS))
def test_a_wrong_bucket_stops_before_training(tmp_path, store):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  with SERVERS[store]() as env:
    endpoint = "STORAGE_EMULATOR_HOST" if store == "gs" else "AWS_ENDPOINT_URL"
    cases = {
        "missing bucket": (f"{store}://no-such-bucket/run", env, ["bucket 'no-such-bucket' does not exist",
                                                                  "shardline never creates buckets"]),
        "unreachable store": (f"{store}://{storage_servers.BUCKET}/run", dict(env, **{endpoint: _closed_port_url()}),
                              ["cannot reach the object store", endpoint, "Nothing was written"]),
    }
    if store == "s3":
      no_keys = {k: v for k, v in env.items() if not k.startswith("AWS_") or k in ("AWS_ENDPOINT_URL", "AWS_REGION")}
      no_keys.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
                     AWS_EC2_METADATA_DISABLED="true", AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
      cases["missing credentials"] = (f"s3://{storage_servers.BUCKET}/run", no_keys,
                                      ["no credentials for s3://", "AWS_ACCESS_KEY_ID"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
      results = {name: pool.submit(_train, url, case_env, cwd) for name, (url, case_env, _) in cases.items()}
    for name, (_, _, needles) in cases.items():
      result = results[name].result()
      message = result.stderr.strip()
      assert result.returncode == 2 and message.startswith("shardline: error:"), (name, message[-2000:])
      assert "Traceback" not in message and "\n\n" not in message, (name, message)
      for needle in needles:
        assert needle in message, (name, needle, message)
    assert storage_servers.list_objects(env, "") == []  # nothing written anywhere
  assert os.listdir(cwd) == []
