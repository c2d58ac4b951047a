"""Object stores for tests, on 127.0.0.1 only: the GCS emulator (gcp-storage-emulator) and an S3 server (moto in
server mode), each started on a free port with one bucket, and the environment that points the clients at it."""
import contextlib
import os
import signal
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
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
          # Plain uploads, without the chunked bodies and checksum trailers botocore sends by default, so that
          # ThrottlingProxy can forward them as they are.
          "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}


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


def read_object(env: Dict[str, str], key: str) -> str:
  """The text of one object of BUCKET, read with the store's own client."""
  if "AWS_ENDPOINT_URL" in env:
    import boto3  # pylint: disable=g-import-not-at-top
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
  from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  client = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]})
  return client.bucket(BUCKET).blob(key).download_as_text()


class Server:
  """A store server in a subprocess on 127.0.0.1 that a test can stall (SIGSTOP, SIGCONT), kill, and start
  again on the same port: the GCS emulator (gcp-storage-emulator, on disk under `data_dir` when given, so a restart
  keeps its objects) or moto's S3 server (in memory). `env` points the clients at it."""

  def __init__(self, kind: str, data_dir: str = None):
    self.kind, self.data_dir, self.port = kind, data_dir, _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.env = gcs_env(self.url) if kind == "gs" else s3_env(self.url)
    self.process = None

  def start(self) -> "Server":
    if self.kind == "gs":
      storage = ["--data-dir", self.data_dir] if self.data_dir else []
      command = [sys.executable, "-m", "tests.gcs_emulator_main", *storage, "start", "--host", "127.0.0.1", "--port",
                 str(self.port), "--default-bucket", BUCKET, "-q", *([] if self.data_dir else ["--in-memory"])]
    else:
      command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
    self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=_REPO)
    _wait_until_answering(f"{self.url}/storage/v1/b" if self.kind == "gs" else self.url)
    if self.kind == "s3":
      import boto3  # pylint: disable=g-import-not-at-top
      boto3.client("s3", endpoint_url=self.url, region_name=self.env["AWS_REGION"],
                   aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                   aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    return self

  def pause(self) -> None:
    """Stops the server answering (its socket still accepts connections), as a stalled store does."""
    os.kill(self.process.pid, signal.SIGSTOP)

  def resume(self) -> None:
    os.kill(self.process.pid, signal.SIGCONT)

  def kill(self) -> None:
    """Ends the server at once, as a crash or a lost route does; connections are then refused."""
    self.process.kill()
    self.process.wait(30)

  def stop(self) -> None:
    if self.process is not None and self.process.poll() is None:
      self.process.send_signal(signal.SIGCONT)
      self.process.terminate()
      self.process.wait(30)


@contextlib.contextmanager
def gcs_emulator(data_dir: str = None) -> Iterator[Dict[str, str]]:
  """A GCS emulator (with the download headers of tests/gcs_emulator_main.py) holding bucket BUCKET; yields the
  client environment."""
  server = Server("gs", data_dir).start()
  try:
    yield server.env
  finally:
    server.stop()


@contextlib.contextmanager
def s3_server() -> Iterator[Dict[str, str]]:
  """moto's S3 server with bucket BUCKET; yields the client environment."""
  server = Server("s3").start()
  try:
    yield server.env
  finally:
    server.stop()


class ThrottlingProxy:
  """An HTTP proxy on 127.0.0.1 in front of a store's server. It answers the next requests (throttle(n)) with
  503 SlowDown, as S3 does when a prefix goes over its request rate, and forwards every other request as it is.
  Point the clients at `env` (the server's, with the endpoint replaced)."""

  def __init__(self, server: Server):
    import http.server  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top
    self.backend = server
    self._lock = threading.Lock()
    self._to_throttle = 0
    self.throttled_requests = 0
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):  # quiet
        del args

      def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
          chunks = []
          while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            chunk = self.rfile.read(size)
            if not size:
              while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers: the checksums of aws-chunked uploads, which the test clients do not send
              return b"".join(chunks)
            self.rfile.readline()
            chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

      def _handle(self):
        import http.client  # pylint: disable=g-import-not-at-top
        body = self._body()
        if proxy.take_throttled():
          reply = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce "
                   b"your request rate.</Message></Error>")
          self.send_response(503)
          self.send_header("Content-Type", "application/xml")
          self.send_header("Content-Length", str(len(reply)))
          self.end_headers()
          self.wfile.write(reply)
          return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection("127.0.0.1", proxy.backend.port, timeout=120)
        try:
          connection.request(self.command, self.path, body=body, headers=headers)
          answer = connection.getresponse()
          data = answer.read()
        except OSError:  # the server behind is gone: so is this connection, as with the server itself
          self.close_connection = True
          return
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
          # A HEAD answer's Content-Length is the object's size, not that of the (empty) body.
          if key.lower() not in ("transfer-encoding", "connection") and (
              key.lower() != "content-length" or self.command == "HEAD"):
            self.send_header(key, value)
        if self.command != "HEAD":
          self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
          self.wfile.write(data)
        connection.close()

      do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._server.daemon_threads = True
    self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
    endpoint = "STORAGE_EMULATOR_HOST" if server.kind == "gs" else "AWS_ENDPOINT_URL"
    self.env = dict(server.env, **{endpoint: self.url})
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="throttling-proxy")
    self._thread.start()

  def throttle(self, requests: int) -> None:
    """Answers the next `requests` requests with 503 SlowDown."""
    with self._lock:
      self._to_throttle = requests

  def take_throttled(self) -> bool:
    """Whether this request is one of the throttled ones (counted)."""
    with self._lock:
      if self._to_throttle <= 0:
        return False
      self._to_throttle -= 1
      self.throttled_requests += 1
      return True

  def stop(self) -> None:
    self._server.shutdown()
    self._server.server_close()
