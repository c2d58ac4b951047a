"""Small datasets in the formats of the real ones, written by the tests (nothing is downloaded): TFDS
imagenet2012, a TFDS image-text dataset and a Zarr radar store."""
import numpy as np

IMAGENET_SIZES = {"train": 6, "validation": 4, "test": 3}


def write_imagenet(data_dir) -> None:
  """TFDS imagenet2012 5.1.0's format: JPEG images, 1000-class labels, file names; an unlabelled 'test' split with
  label -1, as TFDS builds it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def split(name, n):
    labels = rng.integers(0, 1000, n) if name != "test" else np.full(n, -1)
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 255, (n, 40, 56, 3), np.uint8), "label": labels,
        "file_name": [f"{name}_{i}.JPEG" for i in range(n)]})
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                         "label": tfds.features.ClassLabel(num_classes=1000),
                                         "file_name": tfds.features.Text()})
  tfds.dataset_builders.store_as_tfds_dataset(
      name="imagenet2012", version="5.1.0", features=features, data_dir=str(data_dir),
      split_datasets={name: split(name, n) for name, n in IMAGENET_SIZES.items()})


def write_image_text(data_dir, name: str = "shardline_tiny_captions", sizes=None, labelled: bool = False) -> str:
  """A TFDS image-caption dataset like coco_captions (several captions per image), with a 2-class 'label' where
  `labelled`; returns its name."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = {"image": tfds.features.Image(shape=(12, 12, 3)),
              "captions": tfds.features.Sequence({"text": tfds.features.Text()})}
  if labelled:
    features["label"] = tfds.features.ClassLabel(num_classes=2)
  rng = np.random.default_rng(0)
  split = lambda n: tf.data.Dataset.from_tensor_slices({
      "image": rng.integers(0, 255, (n, 12, 12, 3), np.uint8),
      "captions": {"text": np.array([[f"picture {i}", f"other {i}"] for i in range(n)])},
      **({"label": np.arange(n) % 2} if labelled else {})})
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="1.0.0", features=tfds.features.FeaturesDict(features), data_dir=str(data_dir),
      split_datasets={split_name: split(n) for split_name, n in (sizes or {"train": 6}).items()})
  return name


def write_radar_store(path, steps: int = 12, size: int = 40, dims=("time", "y", "x"), skip=()) -> None:
  """A Zarr v3 store with every variable of the precipitation loader (tasks/precipitation/zarr_source.py)."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from shardline.core import paths  # pylint: disable=g-import-not-at-top
  from shardline.tasks.precipitation import zarr_source  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for name in zarr_source.VARIABLES:
    if name in skip:
      continue
    store = ts.open({"driver": "zarr3", "kvstore": paths.tensorstore_kvstore(paths.join(str(path), name)),
                     "metadata": {"shape": [steps, size, size], "data_type": "float32", "dimension_names": list(dims)}},
                    create=True).result()
    store.write(rng.gamma(0.5, 2.0, (steps, size, size)).astype(np.float32)).result()
