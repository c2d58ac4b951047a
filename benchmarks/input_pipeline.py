"""Input throughput: decode + Inception crop + flip at 224 px, shardline's loader against tf.data, same data.

  python -m benchmarks.input_pipeline [--images 2000] [--workers 1 2] [--rounds 3]

One TFDS dataset of synthetic JPEG photographs (benchmarks/jpeg_data.py) is written twice with identical image
bytes: as ArrayRecord, which shardline reads directly (data/tfds_source.py) in grain worker processes, and as
TFRecord, which tf.data reads with decode_and_crop_jpeg, sample_distorted_bounding_box, a bilinear resize and a
random flip in `k` parallel calls on a private thread pool of `k` threads (big_vision's pipeline). Both hand over
uint8 batches (shardline maps them to float on the device). Each side is timed over every image after one warm-up
batch, `rounds` times in alternation, each timing in a fresh Python process (a process that has run tf.data slows
the grain workers it spawns later by about 10%, so nothing here runs in the parent); the figures are the medians of
images/s and of images/s per worker (core), and shardline / tf.data. Both decode only the crop of each JPEG
(shardline with data/_jpeg_window.c, tf.data with decode_and_crop_jpeg), to the same pixels. A third column
times shardline decoding whole JPEGs (`partial_decode=False`, as on a machine where that decoder is not built).
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from shardline.core.errors import stderr_silenced

SIZE = 224
BATCH = 64


def write_datasets(root: str, images: int) -> None:
  """The same photographs as a TFDS dataset of JPEGs in ArrayRecord (root/array_record) and TFRecord
  (root/tfrecord)."""
  with stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from benchmarks import jpeg_data  # pylint: disable=g-import-not-at-top
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                         "label": tfds.features.ClassLabel(num_classes=1000)})
  for file_format in ("array_record", "tfrecord"):  # TFDS encodes the same arrays with the same encoder
    data = tf.data.Dataset.from_generator(
        lambda: ({"image": jpeg_data.photo(i), "label": i % 1000} for i in range(images)),
        output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="shardline_bench_jpegs", version="1.0.0", features=features, split_datasets={"train": data},
        data_dir=os.path.join(root, file_format), file_format=file_format)


def shardline_rate(root: str, workers: int, images: int, partial_decode: bool = True) -> float:
  """Images/s of shardline's loader: grain workers decoding and augmenting into batches of BATCH; with
  partial_decode False, decoding whole JPEGs (as where data/_jpeg_window.c is not built)."""
  from shardline.data import augment, order, pipeline, tfds_source  # pylint: disable=g-import-not-at-top
  source = tfds_source.TfdsSource("shardline_bench_jpegs", os.path.join(root, "array_record"), "train",
                                  {"image": "image", "label": "label"}, encoded=("image",))
  transform = augment.TrainImages(size=SIZE, partial_decode=partial_decode)
  loader = pipeline.RowLoader(source, ("image", "label"), transform, seed=0)
  sampler = order.StepSampler(len(source), BATCH, seed=0)
  steps = images // BATCH
  iterator = pipeline._grain_iterator(  # pylint: disable=protected-access
      pipeline.TrainBatches(loader, sampler, np.arange(BATCH)), 0, steps + 1, workers)
  batch = next(iterator)  # warm-up: workers started and first batch through
  assert batch["image"].shape == (BATCH, SIZE, SIZE, 3)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  rate = steps * BATCH / (time.perf_counter() - start)
  iterator.close()
  return rate


def tfdata_rate(root: str, threads: int, images: int) -> float:
  """Images/s of tf.data doing the same work on the TFRecord copy, with `threads` threads."""
  with stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def augment(example):
    shape = tf.io.extract_jpeg_shape(example["image"])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4], tf.float32), area_range=(0.05, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0, max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(example["image"], window, channels=3)
    image = tf.image.resize(image, (SIZE, SIZE), method="bilinear")
    image = tf.cast(tf.image.random_flip_left_right(image), tf.uint8)  # as shardline's workers hand over
    return {"image": image, "label": example["label"]}

  data = tfds.load("shardline_bench_jpegs", split="train", data_dir=os.path.join(root, "tfrecord"),
                   decoders={"image": tfds.decode.SkipDecoding()}, download=False)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  data = data.repeat().map(augment, num_parallel_calls=threads).batch(BATCH).prefetch(2).with_options(options)
  iterator = iter(data)
  assert next(iterator)["image"].shape == (BATCH, SIZE, SIZE, 3)
  steps = images // BATCH
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return steps * BATCH / (time.perf_counter() - start)


SIDES = {"shardline": shardline_rate, "tfdata": tfdata_rate,
         "shardline_whole_decode": lambda *a: shardline_rate(*a, partial_decode=False)}


def timed_in_fresh_process(side: str, root: str, workers: int, images: int) -> float:
  """Images/s of SIDES[side], measured in a new interpreter."""
  result = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", "--time", side, "--root", root,
                           "--workers", str(workers), "--images", str(images)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
  if result.returncode:
    raise SystemExit(f"Timing {side} with {workers} worker(s) failed (exit {result.returncode}):\n"
                     f"{result.stderr[-4000:]}")
  return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--rounds", type=int, default=3, help="alternating timings of each side; medians reported")
  parser.add_argument("--output", default="benchmarks/results/input_pipeline.json")
  parser.add_argument("--time", choices=SIDES, help=argparse.SUPPRESS)  # one timing, printed (internal)
  parser.add_argument("--root", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.time:
    print(SIDES[args.time](args.root, args.workers[0], args.images))
    return
  with tempfile.TemporaryDirectory() as root:
    start = time.time()
    writer = multiprocessing.get_context("spawn").Process(target=write_datasets, args=(root, args.images))
    writer.start()
    writer.join()
    if writer.exitcode:
      raise SystemExit(f"Writing the datasets failed (exit code {writer.exitcode}); see above.")
    print(f"Wrote {args.images} JPEGs as ArrayRecord and TFRecord in {time.time() - start:.0f} s")
    rows = []
    for k in args.workers:
      rates = {side: [] for side in SIDES}
      for r in range(args.rounds):
        for side in SIDES:
          rates[side].append(timed_in_fresh_process(side, root, k, args.images))
        print(f"{k} worker(s), round {r + 1}/{args.rounds}: " +
              ", ".join(f"{side} {v[-1]:.0f} img/s" for side, v in rates.items()), flush=True)
      row = {"workers": k, "rounds": rates}
      row.update({f"{side}_images_per_s": float(np.median(v)) for side, v in rates.items()})
      row.update({f"{side}_per_core": row[f"{side}_images_per_s"] / k for side in SIDES})
      row["ratio"] = row["shardline_images_per_s"] / row["tfdata_images_per_s"]
      row["ratio_whole_decode"] = row["shardline_whole_decode_images_per_s"] / row["tfdata_images_per_s"]
      rows.append(row)
  from shardline.data import augment  # pylint: disable=g-import-not-at-top
  decoding = augment.describe_jpeg_decoding()
  print(f"decode + Inception crop + flip to {SIZE} px, batches of {BATCH}, {args.images} images, {os.cpu_count()} "
        f"cores; medians of {args.rounds} rounds; shardline's {decoding}")
  print("| workers | shardline img/s | per core | tf.data img/s | per core | shardline / tf.data "
        "| shardline, whole-JPEG decode, img/s | that / tf.data |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['workers']} | {r['shardline_images_per_s']:.0f} | {r['shardline_per_core']:.0f} | "
          f"{r['tfdata_images_per_s']:.0f} | {r['tfdata_per_core']:.0f} | {r['ratio']:.2f}x | "
          f"{r['shardline_whole_decode_images_per_s']:.0f} | {r['ratio_whole_decode']:.2f}x |")
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump({"images": args.images, "cores": os.cpu_count(), "rounds": args.rounds, "jpeg_decoding": decoding,
               "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
