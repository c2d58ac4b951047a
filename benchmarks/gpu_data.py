"""JPEG photographs prepared on this machine as ArrayRecord shards, for the GPU machine's end-to-end training run.

  python -m benchmarks.gpu_data [--out .cache/gpu_jpegs] [--train 448] [--test 64] [--max_mib 44]

Here (with TensorFlow, TFDS and seqio): synthetic photographs of 240-500 px (benchmarks/jpeg_data.py, about
ImageNet's sizes and compressibility) are written as a TFDS dataset, registered as the seqio task
`tasks.tfds_image_classification` makes, and prepared by `shardline data prepare`'s own code (data/prepare.py)
into `--out`/train and `--out`/test: ArrayRecord shards of the encoded JPEGs and labels, and a manifest. The folder
must travel with the device call (`carry`), within its size limit: the script stops if it is larger than
`--max_mib`.

There (no TensorFlow, TFDS or seqio): `benchmarks/gpu_e2e.gin` binds TASK to `benchmarks.prepared_jpegs`
(benchmarks/jpeg_task.py), which reads those folders with data/prepared.py alone.
"""
import argparse
import os
import shutil
import tempfile

from shardline.benchmarks.jpeg_task import SPLITS
from shardline.core.errors import UserError
from shardline.data import prepared
from shardline.tasks import splits

NUM_CLASSES = 1000


def _folder_mib(directory: str) -> float:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(directory) for f in files) / 2**20


def write(out: str, train: int, test: int, max_mib: float) -> None:
  """Writes the photographs as a TFDS dataset and prepares both splits into `out`/train and `out`/test."""
  if os.path.exists(out):
    raise UserError(f"{out} exists already: this writes a new folder and deletes nothing. Remove it (`rm -rf {out}`) "
                    "to build it again, or name another --out.")
  from shardline.core.errors import stderr_silenced  # pylint: disable=g-import-not-at-top
  with stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from benchmarks import jpeg_data  # pylint: disable=g-import-not-at-top
  from shardline.data.settings import StreamSettings  # pylint: disable=g-import-not-at-top
  from shardline.tasks import tfds_image  # pylint: disable=g-import-not-at-top

  def split(first: int, count: int):
    return tf.data.Dataset.from_generator(
        lambda: ({"image": jpeg_data.photo(i), "label": i % NUM_CLASSES} for i in range(first, first + count)),
        output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64)})

  features = tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                         "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES)})
  with tempfile.TemporaryDirectory() as scratch:
    # TFRecord, not ArrayRecord: a TFDS ArrayRecord build would be read in place (and need TFDS there).
    tfds.dataset_builders.store_as_tfds_dataset(
        name="shardline_gpu_jpegs", version="1.0.0", features=features, data_dir=scratch, file_format="tfrecord",
        split_datasets={"train": split(0, train), "test": split(train, test)})
    task = tfds_image.tfds_image_classification("shardline_gpu_jpegs", scratch)
    settings = StreamSettings(cache_dir=os.path.join(scratch, "cache"))
    for name in SPLITS:
      # One shard per split: a few MiB of JPEGs.
      folder = splits.prepare_split(task, name, settings, num_shards=1)
      os.makedirs(os.path.join(out, name))
      manifest = prepared.read_manifest(folder)
      for file in [prepared.MANIFEST] + [s["file"] for s in manifest["shards"]]:
        shutil.copy(os.path.join(folder, file), os.path.join(out, name, file))
      print(f"{name}: {manifest['num_examples']} JPEGs, {_folder_mib(os.path.join(out, name)):.1f} MiB in "
            f"{os.path.join(out, name)}")
  if _folder_mib(out) > max_mib:
    raise UserError(f"{out} holds {_folder_mib(out):.1f} MiB, more than --max_mib {max_mib:g}: with the repository "
                    "and the wheels it would not fit the device call's 64 MiB. Ask for fewer --train images.")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=".cache/gpu_jpegs")
  parser.add_argument("--train", type=int, default=448)
  parser.add_argument("--test", type=int, default=64)
  parser.add_argument("--max_mib", type=float, default=44.0, help="the most the folder may hold (it travels)")
  args = parser.parse_args()
  write(args.out, args.train, args.test, args.max_mib)


if __name__ == "__main__":
  main()
