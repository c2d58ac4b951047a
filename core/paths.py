"""The path layer: every path a user gives (MODEL_DIR, outputs, data and caches) may be local, gs:// or s3://.

All file operations on such paths go through etils `epath`, which orbax uses too, on its fsspec backend
(gcsfs for gs://, s3fs for s3://). shardline sets EPATH_USE_TF=false (unless you set it) because epath would
otherwise send gs:// through TensorFlow's GCS client, which knows no storage emulator and is absent where
TensorFlow is not installed; one backend for everything is easier to reason about.

Where the buckets are: real GCS and S3 by default, with the usual credentials (`gcloud auth application-default
login`, or the AWS credential chain). An emulator or another S3-compatible store is chosen the way the client
libraries themselves read it: STORAGE_EMULATOR_HOST for GCS, AWS_ENDPOINT_URL for S3.

`check_url` refuses a malformed URL and `check_writable` proves, before any training, that the bucket is
reachable, exists and takes a write, so a typo never becomes a local folder named `gs:` and a missing
credential never surfaces an hour into a run.
"""
import contextlib
import os
import re
import socket
import urllib.parse
import uuid
from typing import Iterator, List, Optional

os.environ.setdefault("EPATH_USE_TF", "false")
from etils import epath  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from shardline.core import scratch  # noqa: E402  pylint: disable=g-import-not-at-top
from shardline.core import store_clients  # noqa: E402  pylint: disable=g-import-not-at-top
from shardline.core.errors import UserError  # noqa: E402  pylint: disable=g-import-not-at-top

store_clients.configure()

REMOTE_SCHEMES = ("gs", "s3")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_REACH_TIMEOUT_S = 10.0


def is_remote(path: str) -> bool:
  """Whether `path` is a gs:// or s3:// URL."""
  return str(path).startswith(tuple(f"{scheme}://" for scheme in REMOTE_SCHEMES))


def check_url(path: str, what: str) -> str:
  """`path` as shardline will use it (a local path with ~ expanded, or a bucket URL); a UserError for URLs it
  cannot use, naming `what` (e.g. 'MODEL_DIR') and the fix."""
  path = str(path)
  scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", path)
  if not scheme or len(scheme.group(1)) == 1:  # no scheme, or a Windows drive letter
    return os.path.expanduser(path)
  name = scheme.group(1)
  if name.lower() not in REMOTE_SCHEMES:
    raise UserError(f"{what} = {path!r}: shardline reads and writes local paths, gs://bucket/path and "
                    f"s3://bucket/path, not {name}:. Use one of those.")
  parsed = urllib.parse.urlparse(path)
  if name != name.lower() or not path.startswith(f"{name}://"):
    raise UserError(f"{what} = {path!r} is not a bucket URL: write {name.lower()}://bucket/path (two slashes "
                    "after the colon).")
  if not _BUCKET.match(parsed.netloc or ""):
    raise UserError(f"{what} = {path!r}: {parsed.netloc!r} is not a valid bucket name (3-222 lowercase letters, "
                    f"digits, dots, dashes and underscores). Write {name}://bucket/path.")
  if parsed.query or parsed.fragment or " " in path:
    raise UserError(f"{what} = {path!r}: a bucket path may not contain spaces, '?' or '#'.")
  return path.rstrip("/")


def join(base: str, *parts: str) -> str:
  """Joins path parts; URLs keep their scheme."""
  return str(epath.Path(base).joinpath(*parts)) if is_remote(base) else os.path.join(base, *parts)


def display(path: str) -> str:
  """The absolute local path, or the URL."""
  return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def makedirs(path: str) -> None:
  """Creates a directory and its parents (object stores have no directories: nothing to do there)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> List[str]:
  """Names in a directory; [] when it does not exist."""
  p = epath.Path(path)
  return sorted(child.name for child in p.iterdir()) if p.exists() else []


def read_text(path: str) -> str:
  return epath.Path(path).read_text()


def write_text(path: str, text: str) -> None:
  """Writes a whole file (an object, in a bucket), creating local parent directories."""
  if not is_remote(path):
    makedirs(os.path.dirname(path) or ".")
  epath.Path(path).write_text(text)


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole binary file (an object, in a bucket), creating local parent directories."""
  if not is_remote(path):
    makedirs(os.path.dirname(path) or ".")
  epath.Path(path).write_bytes(data)


def upload_tree(local_dir: str, remote_dir: str) -> None:
  """Copies every file under `local_dir` to the same relative paths under `remote_dir`."""
  for root, _, files in os.walk(local_dir):
    for name in files:
      source = os.path.join(root, name)
      target = join(remote_dir, os.path.relpath(source, local_dir))
      with open(source, "rb") as f:
        epath.Path(target).write_bytes(f.read())


@contextlib.contextmanager
def staged_dir(path: str) -> Iterator[str]:
  """A local folder for code that writes with plain file APIs (matplotlib, numpy): `path` itself when local,
  otherwise a temporary folder whose files are uploaded to `path` at the end."""
  if not is_remote(path):
    makedirs(path)
    yield path
    return
  local = scratch.make_local_scratch("stage")
  try:
    yield local
    upload_tree(local, path)
  finally:
    scratch.remove_local_scratch(local)


class TextAppender:
  """Appends lines to a text file. Objects in a bucket cannot be appended to, so there the whole content is
  kept and rewritten at each write (as TensorFlow's and tensorboardX's writers do for event files).

  A write that fails leaves the file as it was, so it may simply be retried (training/lifecycle/storage.py).
  """

  def __init__(self, path: str):
    self.path = path
    if is_remote(path):
      self._content = read_text(path) if exists(path) else ""
      self._fd = None
    else:
      makedirs(os.path.dirname(path))
      self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def write(self, text: str) -> None:
    """Appends `text` and makes it durable; on failure (a full disk, a store that does not answer) the file
    keeps its previous content."""
    if self._fd is None:
      content = self._content + text
      epath.Path(self.path).write_text(content)
      self._content = content
      return
    data, start = text.encode(), os.fstat(self._fd).st_size
    try:
      written = 0
      while written < len(data):
        written += os.write(self._fd, data[written:])
    except OSError:
      os.ftruncate(self._fd, start)  # no half line for the retry to append after
      raise

  def close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


def tensorstore_kvstore(path: str) -> dict:
  """A TensorStore kvstore spec for a local path or a bucket URL, with the endpoint the other clients use (an
  emulator's, or another S3-compatible store's; TensorStore's S3 driver does not read AWS_ENDPOINT_URL itself,
  and without an explicit endpoint its requests never finish there) and bounded retries (store_clients.py)."""
  if not is_remote(path):
    return {"driver": "file", "path": path}
  scheme, rest = path.split("://", 1)
  bucket, _, key = rest.partition("/")
  if scheme == "gs":
    return {"driver": "gcs", "bucket": bucket, "path": key, **store_clients.tensorstore_options("gs")}
  spec = {"driver": "s3", "bucket": bucket, "path": key,
          "aws_region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
          **store_clients.tensorstore_options("s3")}
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
  if endpoint:
    spec["endpoint"] = endpoint
  return spec


def check_local(path: str, what: str, why: str) -> str:
  """`path` with ~ expanded; a UserError if it is a bucket URL, for data that must live on local disk (`why`)."""
  path = check_url(path, what)
  if is_remote(path):
    raise UserError(f"{what} = {path}: {why} Give a local folder.")
  return path


def _endpoint(scheme: str):
  """(host, port, how it was chosen) of the object store that `scheme` URLs go to."""
  if scheme == "gs":
    url, source = os.environ.get("STORAGE_EMULATOR_HOST"), "STORAGE_EMULATOR_HOST"
    url, source = (url, source) if url else ("https://storage.googleapis.com", "Google Cloud Storage")
  else:
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    source = "AWS_ENDPOINT_URL" if url else "Amazon S3"
    url = url or "https://s3.amazonaws.com"
  parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
  return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80), f"{url} ({source})"


def _explain(error: Exception, path: str, what: str, action: str) -> UserError:
  """A storage client's exception as one paragraph that says what to do."""
  name, text = type(error).__name__, (str(error).splitlines() or [""])[0][:200]
  if isinstance(error, PermissionError) or "403" in text or "AccessDenied" in text or "Forbidden" in text:
    return UserError(f"{what} = {path}: {action} was denied ({name}: {text}). Grant this account write access "
                     "to the bucket, or choose a bucket it may write.")
  return UserError(f"{what} = {path}: {action} failed ({name}: {text}). Check the bucket and your credentials.")


def _missing_credentials(scheme: str) -> Optional[str]:
  """Why the store's client has no credentials, or None. (Without this check gcsfs silently falls back to
  anonymous access and s3fs reports a bucket it may not see as missing.)"""
  if scheme == "s3":
    import botocore.session  # pylint: disable=g-import-not-at-top
    if botocore.session.get_session().get_credentials() is None:
      return "the AWS credential chain found none"
    return None
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    return None  # the emulator takes anonymous requests
  import google.auth  # pylint: disable=g-import-not-at-top
  try:
    google.auth.default()
  except google.auth.exceptions.DefaultCredentialsError as e:
    return (str(e).splitlines() or [""])[0][:200]
  return None


def check_writable(path: str, what: str) -> None:
  """For a bucket URL: stops unless the store answers, credentials exist, the bucket exists and a test object can
  be written and deleted under `path`. Local paths need no check (they are created when first written)."""
  if not is_remote(path):
    return
  scheme, bucket = path.split("://")[0], urllib.parse.urlparse(path).netloc
  host, port, endpoint = _endpoint(scheme)
  try:
    socket.create_connection((host, port), timeout=_REACH_TIMEOUT_S).close()
  except OSError as e:
    raise UserError(f"{what} = {path}: cannot reach the object store at {endpoint}: {e.strerror or e}. Check the "
                    "network, or the emulator address if you use one. Nothing was written.") from e
  missing = _missing_credentials(scheme)
  if missing:
    how = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" if scheme == "s3" else
           "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS")
    raise UserError(f"{what} = {path}: no credentials for {scheme}:// ({missing}). To fix it, {how}. Nothing was "
                    "written.")
  try:
    bucket_exists = epath.Path(f"{scheme}://{bucket}").exists()
  except Exception as e:  # pylint: disable=broad-except  # each client raises its own types
    raise _explain(e, path, what, f"looking up bucket {bucket}") from e
  if not bucket_exists:
    raise UserError(f"{what} = {path}: bucket {bucket!r} does not exist at {endpoint}. Create it first (shardline "
                    "never creates buckets), or fix the name. Nothing was written.")
  probe = join(path, f"{scratch.PROBE_PREFIX}{uuid.uuid4().hex}")
  try:
    epath.Path(probe).write_text("shardline checks that it may write here; this object is deleted at once\n")
    scratch.remove_probe(probe)
  except Exception as e:  # pylint: disable=broad-except
    raise _explain(e, path, what, "writing a test object") from e
