"""MODEL_DIR's store during a run: transient failures are retried for a bounded time, with one log line per
outage, and a store that stays away stops the run with one paragraph and STORAGE_EXIT_CODE.

Two layers, each doing one thing:
- Each client library retries a failed or slow *request* a few times, with its own mechanism and bounded
  timeouts (core/store_clients.py: botocore, s3fs, gcsfs, TensorStore). That absorbs a 503, a throttled request
  or a dropped connection within seconds.
- `Store.run` bounds an *outage*: when a write still fails after the library's retries (the store is down, a
  route is lost, the disk is full), it logs one line, retries the whole write with exponential backoff and
  jitter, and gives up `timeout_s` after the outage began (plus at most one request's timeout) with
  StorageUnavailable. No library can do this part: their retries are counted per request and differ per
  library (TensorStore's defaults alone span 15 minutes), and none knows the run's step or its last checkpoint.

Every write the run makes goes through one Store: checkpoints (training/lifecycle/checkpoints.py), the metrics
JSON lines and TensorBoard events (summaries.py), the gin configs and profiles. A failed checkpoint save never
reads as a checkpoint (orbax commits a step last, by a rename or a commit file), so the resume after the store
returns starts from the last committed step and replays exactly the batches an uninterrupted run would see.
"""
import errno
import logging
import random
import time
from typing import Callable, Optional, Tuple, TypeVar

from shardline.core import paths
from shardline.core.errors import UserError

DEFAULT_TIMEOUT_S = 300.0
# sysexits.h's EX_UNAVAILABLE: a service the run needs is unavailable. Different from preemption's 75 (EX_TEMPFAIL).
STORAGE_EXIT_CODE = 69
BACKOFF_S = (1.0, 30.0)  # the first wait between attempts, and the longest
# TensorStore raises ValueError with an absl status; these name a store that did not answer, or a full disk.
_TRANSIENT_STATUSES = ("UNAVAILABLE:", "DEADLINE_EXCEEDED:", "ABORTED:", "RESOURCE_EXHAUSTED:", "UNKNOWN: CURL")
_TRANSIENT_NAMES = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "FSTimeoutError",
                    "ServiceUnavailable", "TooManyRequests", "InternalServerError", "BadGateway", "GatewayTimeout",
                    "RetryError", "DeadlineExceeded", "TransportError", "ProtocolError", "IncompleteRead")
_TRANSIENT_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
                    "InternalError", "500", "502", "503", "504")

T = TypeVar("T")


class StorageUnavailable(UserError):
  """MODEL_DIR's store did not answer for the whole storage timeout."""

  exit_code = STORAGE_EXIT_CODE


def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _botocore_code(error: BaseException) -> str:
  """The error code of a botocore ClientError (its `response` dict), or ''."""
  response = getattr(error, "response", None)
  return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def is_transient(error: BaseException) -> bool:
  """Whether an error from a storage client means "not now" (a store that does not answer, throttles, or a full
  disk) rather than "never" (a missing bucket, a denied write, a bug)."""
  for e in _chain(error):
    if isinstance(e, (ConnectionError, TimeoutError)):
      return True
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.ECONNREFUSED, errno.ECONNRESET,
                                               errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
      return True
    if type(e).__name__ in _TRANSIENT_NAMES:
      return True
    if _botocore_code(e) in _TRANSIENT_CODES:
      return True
    if isinstance(e, ValueError) and str(e).startswith(_TRANSIENT_STATUSES):
      return True
  return False


def _is_disk_full(error: BaseException) -> bool:
  return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
             or "No space left on device" in str(e) for e in _chain(error))


def _short(error: BaseException) -> str:
  text = (str(error).splitlines() or [""])[0].split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {text[:160]}"


_CLIENT_LOGGERS = ("absl", "gcsfs", "s3fs", "fsspec", "aiohttp", "botocore")  # orbax logs through absl's logger


class _ReportedElsewhere(logging.Filter):
  """Drops a storage client's log records of a failure it also raises: orbax logs each failing save thread with
  its traceback (several per save), gcsfs each request out of retries, and fsspec's prefetcher each read that
  failed. The error reaches the training thread, where the Store reports an outage in one line, and any other
  error surfaces with its traceback."""

  def filter(self, record: logging.LogRecord) -> bool:
    if not record.exc_info or record.name.split(".")[0] not in _CLIENT_LOGGERS:
      return True
    if "orbax" in record.pathname:
      return False
    return not is_transient(record.exc_info[1])


def quiet_client_failures() -> None:
  """Installs the filter above on the root logger's handlers (idempotent), where it sees the records of every
  client logger and its children (a logger's own filters see only the records logged on that logger itself, not
  those of fsspec.prefetcher under fsspec). Without a handler, Python's default stderr one is installed first, as
  the first logging call would."""
  if not logging.root.handlers:
    logging.basicConfig()
  for handler in logging.root.handlers:
    if not any(isinstance(f, _ReportedElsewhere) for f in handler.filters):
      handler.addFilter(_ReportedElsewhere())


class Store:
  """Runs the run's writes to MODEL_DIR through the outage handling described in the module docstring.

  Attributes:
    model_dir: MODEL_DIR, as the user gave it.
    timeout_s: how long an outage may last (train.storage.timeout_s).
    last_committed: the newest checkpoint step known to be committed (None: none yet); the Checkpointer keeps it.
  """

  def __init__(self, model_dir: str, timeout_s: float = DEFAULT_TIMEOUT_S,
               log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep, rng: Optional[random.Random] = None,
               on_wait: Callable[[], None] = lambda: None):
    """`on_wait` is called while an outage is retried (the hang watchdog's progress: waiting for a store is not a
    hang; the storage timeout bounds it)."""
    self.model_dir, self.timeout_s, self._log, self._on_wait = model_dir, timeout_s, log, on_wait
    quiet_client_failures()
    self._clock, self._sleep, self._rng = clock, sleep, rng or random.Random()
    self.last_committed: Optional[int] = None
    # Asked when the run stops: (the newest checkpoint known committed, a newer one whose save may have completed).
    self.committed_probe: Callable[[], Tuple[Optional[int], Optional[int]]] = lambda: (self.last_committed, None)
    self.step: Optional[int] = None  # the training step the run is at, for the messages
    self._since: Optional[float] = None
    self._since_step: Optional[int] = None

  def where(self) -> str:
    """MODEL_DIR described for the messages: the bucket, or the local disk."""
    if paths.is_remote(self.model_dir):
      return f"the bucket of MODEL_DIR {self.model_dir}"
    return f"the disk of MODEL_DIR {paths.display(self.model_dir)}"

  def run(self, operation: str, write: Callable[[], T]) -> T:
    """write(), retried through a transient outage for at most timeout_s; `operation` names it ('saving
    checkpoint 40'). Other errors propagate at once."""
    attempt = 0
    while True:
      try:
        value = write()
      except Exception as e:  # pylint: disable=broad-except  each store client raises its own types
        if not is_transient(e):
          raise
        self._failed(operation, e, attempt)
        attempt += 1
        continue
      if self._since is not None:
        self._log(f"{self.where()} answers again after {self._clock() - self._since:.0f} s ({operation} done).")
        self._since = None
      return value

  def note(self, operation: str, error: BaseException) -> None:
    """Records a write that failed in the background (a checkpoint's commit): a transient failure starts (or
    continues) the outage; any other is logged in one line, as that write is lost and the next one goes on."""
    if is_transient(error):
      self._start(operation, error)
    else:
      self._log(f"{self.where()}: {operation} failed ({_short(error)}); the next write goes on.")

  def _start(self, operation: str, error: BaseException) -> None:
    if self._since is None:
      self._since, self._since_step = self._clock(), self.step
      what = "is full" if _is_disk_full(error) else "is not answering"
      self._log(f"{self.where()} {what} (since step {self.step}, {operation}: {_short(error)}); retrying for up to "
                f"{self.timeout_s:.0f} s (train.storage.timeout_s).")

  def _failed(self, operation: str, error: BaseException, attempt: int) -> None:
    self._start(operation, error)
    waited = self._clock() - self._since
    if waited >= self.timeout_s:
      raise StorageUnavailable(self.paragraph(operation, error, waited)) from error
    low, high = BACKOFF_S
    delay = min(high, low * 2 ** attempt) * self._rng.uniform(0.5, 1.5)
    self._on_wait()
    self._sleep(min(delay, max(self.timeout_s - waited, 0.0) + 0.1))

  def paragraph(self, operation: str, error: BaseException, waited: float) -> str:
    """The message a run stops with when the store stays away."""
    full = _is_disk_full(error)
    committed, in_flight = self.committed_probe()
    if in_flight is not None:
      known = f"step {committed}" if committed is not None else "none"
      checkpoint = (f"Step {in_flight} was being saved when the store stopped answering; the last checkpoint known "
                    f"to be committed is {known}: the resume starts from step {in_flight} if that save was "
                    "completed, and otherwise from the one before (a save cut off never reads as a checkpoint).")
    elif committed is not None:
      checkpoint = (f"The last committed checkpoint is step {committed}; a save cut off after it never reads as a "
                    "checkpoint.")
    else:
      checkpoint = "No checkpoint of this run was committed yet."
    remedy = ("Free space on that disk (or point MODEL_DIR elsewhere with its files), then rerun the same command"
              if full else "Rerun the same command to resume once the store answers")
    return (f"{self.where()} {'is full' if full else 'stopped answering'}: {operation} has failed since step "
            f"{self._since_step} for {waited:.0f} s, longer than train.storage.timeout_s = {self.timeout_s:.0f} s "
            f"(last error: {_short(error)}). {checkpoint} {remedy}: training continues from there with the same "
            f"batches. Exit {STORAGE_EXIT_CODE} tells a scheduler to retry later.")
