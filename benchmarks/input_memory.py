"""Peak memory of `shardline train` against dataset size: it must not grow with the data.

  python -m benchmarks.input_memory --images 20000 200000 [--steps 40] [--root /tmp/shardline_bench]
  python -m benchmarks.input_memory --images 2000 5000 --old_checkout /path/to/c5ab65f   # the old loader

For each size, a TFDS dataset of that many generated 224 x 224 JPEG photographs (benchmarks/jpeg_data.py, plus
a 512-image 'test' split) is written once under --root (ArrayRecord; TFRecord for an --old_checkout run, whose
loader reads TFRecord through seqio). Then the tiny ViT-22B (patch 32, 1000 classes) trains for --steps steps of
64 images on 8 simulated CPU devices, through gin/tasks/tfds_image.gin (Inception crop and flip in 2 grain
workers), and evaluates the test split at the end. The peak resident memory of the training process, and of it
with its worker processes, is sampled every 0.1 s.

--old_checkout runs a checkout of shardline from before the input layer (it materialised whole splits in
every process) with the same gin, for contrast.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import psutil

from shardline.core.errors import stderr_silenced

TEST_IMAGES = 512


def write_dataset(directory: str, images: int, file_format: str) -> None:
  """TFDS 'shardline_bench_jpegs' with `images` training and TEST_IMAGES test photographs, 224 x 224 JPEG."""
  if os.path.exists(os.path.join(directory, "shardline_bench_jpegs")):
    return
  with stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from benchmarks import jpeg_data  # pylint: disable=g-import-not-at-top

  def split(first: int, count: int):
    def examples():
      for i in range(first, first + count):
        yield {"image": jpeg_data.photo(i, size=224), "label": i % 1000}
    return tf.data.Dataset.from_generator(examples, output_signature={
        "image": tf.TensorSpec((224, 224, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64)})

  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(224, 224, 3), encoding_format="jpeg"),
                                         "label": tfds.features.ClassLabel(num_classes=1000)})
  tfds.dataset_builders.store_as_tfds_dataset(
      name="shardline_bench_jpegs", version="1.0.0", features=features, data_dir=directory,
      split_datasets={"train": split(0, images), "test": split(images, TEST_IMAGES)}, file_format=file_format)


def folder_bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(directory) for f in files)


def train_command(data_dir: str, model_dir: str, steps: int, old: bool):
  """`shardline train` of the tiny ViT-22B at 224 px on the generated dataset (the old checkout has no
  stream.* settings: it materialises the splits)."""
  return [sys.executable, "-m", "shardline.launch.cli", "train",
          "--gin_file=models/vit22b/tiny.gin", "--gin_file=tasks/tfds_image.gin",
          "--gin_file=mesh/cpu8_fsdp4_tensor2.gin", "--gin_file=runs/train.gin",
          "--gin.tasks.tfds_image_classification.tfds_name='shardline_bench_jpegs'",
          f"--gin.tasks.tfds_image_classification.data_dir='{data_dir}'",
          "--gin.NUM_CLASSES=1000", "--gin.IMAGE_SIZE=224", "--gin.vit22b.ViT22BConfig.patch_size=32",
          "--gin.BATCH_SIZE=64", f"--gin.train.steps={steps}", "--gin.train.log_every=10",
          "--gin.train.eval_every=100000", "--gin.train.checkpoint_every=100000", f"--gin.MODEL_DIR='{model_dir}'"
          ] + ([] if old else ["--gin.stream.workers=2"])


def peak_memory(command, cwd: str, env: dict, log_path: str):
  """Runs `command` (output to log_path); returns (exit code, seconds, peak RSS of the process, peak RSS with
  its children, output)."""
  start = time.time()
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    watched = psutil.Process(process.pid)
    own = total = 0
    while process.poll() is None:
      try:
        rss = watched.memory_info().rss
        children = sum(c.memory_info().rss for c in watched.children(recursive=True))
      except psutil.Error:
        break
      own, total = max(own, rss), max(total, rss + children)
      time.sleep(0.1)
    process.wait()
  with open(log_path) as f:
    output = f.read()
  return process.returncode, time.time() - start, own, total, output


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, nargs="+", default=[20000, 200000])
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--root", default="/tmp/shardline_bench")
  parser.add_argument("--old_checkout", default=None, help="a shardline checkout from before the input layer")
  parser.add_argument("--output", default="benchmarks/results/input_memory.json")
  args = parser.parse_args()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  file_format = "tfrecord" if args.old_checkout else "array_record"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if args.old_checkout:  # a shardline/ folder of links to the old checkout's packages, ahead of this install
    env["PYTHONPATH"] = os.path.join(args.root, "old_package")
    os.makedirs(os.path.join(env["PYTHONPATH"], "shardline"), exist_ok=True)
    for top in ("core", "partitioning", "models", "kernels", "tasks", "training", "launch", "gin"):
      link = os.path.join(env["PYTHONPATH"], "shardline", top)
      if not os.path.islink(link):
        os.symlink(os.path.join(os.path.abspath(args.old_checkout), top), link)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.old_checkout or repo,
                          capture_output=True, text=True).stdout.strip()
  rows = []
  for images in args.images:
    data_dir = os.path.join(args.root, f"{file_format}_{images}")
    start = time.time()
    write_dataset(data_dir, images, file_format)
    print(f"{images:,} JPEGs: {folder_bytes(data_dir) / 2**30:.2f} GiB on disk (written or found in "
          f"{time.time() - start:.0f} s)", flush=True)
    model_dir = os.path.join(args.root, f"run_{'old' if args.old_checkout else 'new'}_{images}")
    subprocess.run(["rm", "-rf", model_dir], check=True)
    code, seconds, own, total, output = peak_memory(train_command(data_dir, model_dir, args.steps, bool(args.old_checkout)),
                                                    args.old_checkout or repo, env, model_dir + ".log")
    if code != 0:
      print(output[-3000:])
      raise SystemExit(f"training on {images} images failed with exit code {code}")
    rows.append({"images": images, "dataset_gib": folder_bytes(data_dir) / 2**30, "seconds": seconds,
                 "peak_rss_gib": own / 2**30, "peak_rss_with_workers_gib": total / 2**30,
                 "loader": "old (materialise)" if args.old_checkout else "streaming", "commit": commit,
                 "date": time.strftime("%Y-%m-%d")})
    print(f"  peak RSS {own / 2**30:.2f} GiB ({total / 2**30:.2f} GiB with workers), {seconds:.0f} s", flush=True)
  print("| loader | images | dataset GiB | peak RSS GiB | with workers GiB | wall s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['loader']} | {r['images']:,} | {r['dataset_gib']:.2f} | {r['peak_rss_gib']:.2f} | "
          f"{r['peak_rss_with_workers_gib']:.2f} | {r['seconds']:.0f} |")
  results = {}
  if os.path.exists(args.output):
    with open(args.output) as f:
      results = json.load(f)
  results.setdefault("rows", []).extend(rows)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
