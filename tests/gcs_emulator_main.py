"""Runs gcp-storage-emulator with the object-generation headers that real GCS sends on downloads.

The emulator answers object downloads without `x-goog-generation`, and TensorStore's GCS driver needs it for
the read-modify-write of an OCDBT manifest (orbax's default checkpoint format): without it a save of a real model
fails with "Malformed StorageGeneration". The headers are copied from the object's own metadata, as GCS does.
Usage: python -m tests.gcs_emulator_main start --host 127.0.0.1 --port P ... (the emulator's own flags).
"""
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status == 200 or response.status == 206:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])


objects.download = _download_with_generation

from gcp_storage_emulator.__main__ import main  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  sys.exit(main())
