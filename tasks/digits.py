"""scikit-learn's bundled 8x8 handwritten digits as a seqio task: real images, no download.

1797 images of 10 classes. The split is deterministic and stratified: within each class, a fixed permutation
puts 80% in 'train' and 20% in 'test' (1437 / 360 examples).
"""
import functools
from typing import Dict

import numpy as np
from sklearn import datasets

from shardline.tasks.tensorflow_setup import seqio, tf

TASK_NAME = "digits"
NUM_CLASSES = 10
IMAGE_SIZE = 8
SPLIT_SEED = 20230210
TEST_FRACTION = 0.2
SPLITS = ("train", "test")


@functools.lru_cache(maxsize=None)
def load_split(split: str) -> Dict[str, np.ndarray]:
  """The split as arrays: 'image' [n, 8, 8, 1] float32 in [0, 1] and 'label' [n] int32."""
  if split not in SPLITS:
    raise ValueError(f"digits has splits {SPLITS}, not {split!r}.")
  raw = datasets.load_digits()
  images = (raw.images / 16.0).astype(np.float32)[..., None]
  labels = raw.target.astype(np.int32)
  rng = np.random.default_rng(SPLIT_SEED)
  chosen = []
  for c in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(round(len(idx) * TEST_FRACTION))
    chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
  idx = np.sort(np.concatenate(chosen))
  return {"image": images[idx], "label": labels[idx]}


def _dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
  del shuffle_files, seed  # One in-memory file; shuffling happens in the loader, by step.
  return tf.data.Dataset.from_tensor_slices(load_split(split))


def accuracy(targets, predictions) -> Dict[str, float]:
  """seqio metric: percentage of predictions equal to the targets."""
  targets, predictions = np.asarray(targets), np.asarray(predictions)
  return {"accuracy": 100.0 * float(np.mean(targets == predictions))}


OUTPUT_FEATURES = {
    "image": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.float32, rank=3),
    "label": seqio.Feature(seqio.PassThroughVocabulary(NUM_CLASSES), add_eos=False, dtype=tf.int32, rank=0),
}

if TASK_NAME not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      TASK_NAME,
      source=seqio.FunctionDataSource(_dataset_fn, splits=SPLITS,
                                      num_input_examples={s: len(load_split(s)["label"]) for s in SPLITS}),
      output_features=OUTPUT_FEATURES,
      metric_fns=[accuracy],
  )
