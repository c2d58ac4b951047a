"""Retry and timeout settings of the object-store clients, so that no single request waits or retries without
bound: each library retries a failed or slow request a few times (its own mechanism), and the run's outage
handling (training/lifecycle/storage.py) bounds how long a whole outage may last.

The libraries and what is set (only where the user has not set it):
- botocore (s3fs, and boto3 in tensorboardX): 'standard' retry mode, 3 attempts per request (AWS_RETRY_MODE,
  AWS_MAX_ATTEMPTS), a 10 s connect and 20 s read timeout (s3fs's config_kwargs through fsspec's configuration).
- gcsfs: a 60 s timeout per request (it has none by default; its 6 retries stay).
- TensorStore (orbax's array data): its S3 and GCS drivers retry a request 4 times, 1 s to 8 s apart (32 times,
  up to 32 s apart, by default: 15 minutes), and abort a transfer that moves no data for 30 s
  (TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS; 120 s by default).
- TensorStore's S3 driver reads credentials from the environment when they are there: by default it builds the
  whole AWS credential chain for every store it opens, and its AWS C library logs an E-level line for each missing
  ~/.aws file, dozens per checkpoint.
"""
import os
from typing import Any, Dict

S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 20
GCS_REQUEST_TIMEOUT_S = 60
TENSORSTORE_RETRIES = {"max_retries": 4, "initial_delay": "1s", "max_delay": "8s"}
_ENVIRONMENT = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "3",
                "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS": "30"}


def configure() -> None:
  """Applies the settings above to this process (idempotent; settings the user made are kept)."""
  for name, value in _ENVIRONMENT.items():
    os.environ.setdefault(name, value)
  import fsspec.config  # pylint: disable=g-import-not-at-top
  s3 = fsspec.config.conf.setdefault("s3", {})
  s3.setdefault("config_kwargs", {}).setdefault("connect_timeout", S3_CONNECT_TIMEOUT_S)
  s3["config_kwargs"].setdefault("read_timeout", S3_READ_TIMEOUT_S)
  fsspec.config.conf.setdefault("gcs", {}).setdefault("requests_timeout", GCS_REQUEST_TIMEOUT_S)


def tensorstore_options(scheme: str) -> Dict[str, Any]:
  """Extra members of a TensorStore kvstore spec for `scheme` ('s3' or 'gs'): bounded request retries and, for
  S3 with keys in the environment, environment credentials."""
  if scheme == "gs":
    return {"gcs_request_retries": dict(TENSORSTORE_RETRIES)}
  options: Dict[str, Any] = {"s3_request_retries": dict(TENSORSTORE_RETRIES)}
  if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
    options["aws_credentials"] = {"type": "environment"}
  return options
