"""The outage handling of MODEL_DIR's writes (training/lifecycle/storage.py) on a fake clock: transient errors are
retried with growing waits and one line per outage, other errors are raised at once, and an outage longer than the
timeout ends with the paragraph; plus the classification of the storage clients' errors."""
import errno
import logging

import pytest

from shardline.training.lifecycle import storage


class _Clock:
  def __init__(self):
    self.now, self.waits = 0.0, []

  def time(self):
    return self.now

  def sleep(self, seconds):
    self.waits.append(seconds)
    self.now += seconds


def _store(clock, lines, timeout=60.0):
  import random  # pylint: disable=g-import-not-at-top
  store = storage.Store("gs://bucket/run", timeout, lines.append, clock.time, clock.sleep, random.Random(0))
  store.step = 12
  return store


def _failing(times, error):
  calls = []

  def write():
    calls.append(1)
    if len(calls) <= times:
      raise error
    return "written"
  return write, calls


def test_a_transient_outage_is_retried_with_growing_waits_and_reported_once():
  clock, lines = _Clock(), []
  write, calls = _failing(4, ConnectionError("refused"))
  assert _store(clock, lines).run("saving checkpoint 12", write) == "written"
  assert len(calls) == 5 and len(clock.waits) == 4
  assert 0.5 <= clock.waits[0] <= 1.5 and clock.waits[-1] > clock.waits[0]
  assert len(lines) == 2
  assert lines[0].startswith("the bucket of MODEL_DIR gs://bucket/run is not answering (since step 12, saving "
                             "checkpoint 12: ConnectionError: refused); retrying for up to 60 s")
  assert lines[1].startswith("the bucket of MODEL_DIR gs://bucket/run answers again after")


def test_an_outage_longer_than_the_timeout_ends_with_one_paragraph():
  clock, lines = _Clock(), []
  store = _store(clock, lines, timeout=30.0)
  store.last_committed = 10
  write, _ = _failing(10 ** 6, TimeoutError("read timed out"))
  with pytest.raises(storage.StorageUnavailable) as stopped:
    store.run("writing the train metrics of step 12", write)
  assert stopped.value.exit_code == storage.STORAGE_EXIT_CODE == 69
  message = str(stopped.value)
  assert "\n" not in message and 30 <= clock.now <= 31
  for needle in ("gs://bucket/run stopped answering: writing the train metrics of step 12 has failed since step 12",
                 "longer than train.storage.timeout_s = 30 s", "TimeoutError: read timed out",
                 "The last committed checkpoint is step 10", "Rerun the same command to resume", "Exit 69"):
    assert needle in message, (needle, message)
  assert len(lines) == 1  # one line for the outage, however many attempts


def test_a_full_disk_is_named_as_such():
  clock, lines = _Clock(), []
  store = storage.Store("/data/run", 5.0, lines.append, clock.time, clock.sleep)
  write, _ = _failing(10 ** 6, OSError(errno.ENOSPC, "No space left on device"))
  with pytest.raises(storage.StorageUnavailable, match="the disk of MODEL_DIR /data/run is full: .*Free space on "
                                                       "that disk"):
    store.run("saving checkpoint 3", write)
  assert "is full (since step None" in lines[0]


def test_errors_that_are_not_the_stores_are_raised_at_once():
  clock, lines = _Clock(), []
  write, calls = _failing(1, PermissionError(errno.EACCES, "denied"))
  with pytest.raises(PermissionError):
    _store(clock, lines).run("writing config.gin", write)
  assert len(calls) == 1 and not lines and not clock.waits


class _ClientError(Exception):
  def __init__(self, code):
    super().__init__(code)
    self.response = {"Error": {"Code": code}}


@pytest.mark.parametrize("error, transient", [
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (OSError(errno.ENOSPC, "full"), True),
    (_ClientError("SlowDown"), True),
    (_ClientError("503"), True),
    (_ClientError("AccessDenied"), False),
    (ValueError("UNAVAILABLE: CURL error Couldn't connect to server"), True),
    (ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device"), True),
    (ValueError("INVALID_ARGUMENT: bad spec"), False),
    (FileNotFoundError(), False),
    (KeyError("x"), False),
])
def test_the_storage_clients_errors_are_classified(error, transient):
  assert storage.is_transient(error) is transient


def test_a_cause_deep_in_the_chain_counts():
  try:
    try:
      raise ConnectionResetError("reset by peer")
    except ConnectionResetError as inner:
      raise RuntimeError("write failed") from inner
  except RuntimeError as outer:
    assert storage.is_transient(outer)


@pytest.mark.parametrize("logger, error, shown", [
    ("fsspec.prefetcher", ConnectionRefusedError("127.0.0.1:1"), False),  # a child of a client's logger
    ("gcsfs", TimeoutError(), False),
    ("fsspec.prefetcher", ValueError("a bug"), True),  # not an outage: its traceback is shown
    ("shardline.anything", ConnectionRefusedError(), True),  # not a storage client's record
])
def test_client_records_of_an_outage_are_dropped_where_they_are_printed(logger, error, shown):
  storage.quiet_client_failures()
  printed = []
  handler = logging.Handler()
  handler.emit = printed.append
  logging.root.addHandler(handler)
  try:
    storage.quiet_client_failures()  # the handler added after the first call gets the filter too
    try:
      raise error
    except Exception:  # pylint: disable=broad-except
      logging.getLogger(logger).exception("Consumer caught an error.")
  finally:
    logging.root.removeHandler(handler)
  assert bool(printed) is shown
