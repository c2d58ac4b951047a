"""Object stores for tests, on 127.0.0.1 only: the GCS emulator (gcp-storage-emulator) and an S3 server (moto in
server mode), each started on a free port with one bucket, and the environment that points the clients at it."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, Iterator, List

BUCKET = "shardline-test"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_until_answering(url: str, timeout: float = 60) -> None:
  deadline = time.time() + timeout
  while True:
    try:
      urllib.request.urlopen(url, timeout=2).read()
      return
    except urllib.error.HTTPError:
      return  # it answered
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.2)


def gcs_env(url: str) -> Dict[str, str]:
  """Points gcsfs, google-cloud-storage, tensorboardX and TensorStore at the emulator, anonymously."""
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
          "GOOGLE_CLOUD_PROJECT": "shardline-test", "FSSPEC_GCS": '{"token": "anon", "project": "shardline-test"}',
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true",
          "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "GCE_METADATA_ROOT": "127.0.0.1:9"}


def s3_env(url: str) -> Dict[str, str]:
  """Points boto3, s3fs and TensorStore at the S3 server with test credentials."""
  return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def list_objects(env: Dict[str, str], prefix: str) -> List[str]:
  """Names of the objects of BUCKET under `prefix`, read with the store's own client (not shardline's path layer)."""
  if "AWS_ENDPOINT_URL" in env:
    import boto3  # pylint: disable=g-import-not-at-top
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
  from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  client = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]})
  return sorted(blob.name for blob in client.list_blobs(BUCKET, prefix=prefix))


@contextlib.contextmanager
def gcs_emulator() -> Iterator[Dict[str, str]]:
  """A GCS emulator (with the download headers of tests/gcs_emulator_main.py) holding bucket BUCKET; yields the
  client environment."""
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-m", "tests.gcs_emulator_main", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--in-memory", "--default-bucket", BUCKET, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=_REPO)
  url = f"http://127.0.0.1:{port}"
  try:
    _wait_until_answering(f"{url}/storage/v1/b")
    yield gcs_env(url)
  finally:
    server.terminate()
    server.wait(30)


@contextlib.contextmanager
def s3_server() -> Iterator[Dict[str, str]]:
  """moto's S3 server with bucket BUCKET; yields the client environment."""
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  try:
    _wait_until_answering(url)
    import boto3  # pylint: disable=g-import-not-at-top
    env = s3_env(url)
    boto3.client("s3", endpoint_url=url, region_name=env["AWS_REGION"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    yield env
  finally:
    server.terminate()
    server.wait(30)
