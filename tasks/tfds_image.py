"""Image classification from a TFDS dataset on disk, as a seqio task named in gin (images kept encoded).

Nothing is downloaded: the dataset must already be prepared under `data_dir` (`tfds build` or
`tfds.builder(...).download_and_prepare()` on a machine with access). A missing dataset stops with a message
that says where shardline looked and how to prepare it.
"""
import gin

from shardline.tasks.tensorflow_setup import seqio, tf  # first: TensorFlow quiet, off the GPUs
# pylint: disable=g-bad-import-order,wrong-import-order
import tensorflow_datasets as tfds  # noqa: E402

from shardline.core import paths
from shardline.core.errors import UserError
from shardline.tasks import splits
from shardline.data import tfds_source


def check_prepared(tfds_name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of a TFDS dataset prepared under data_dir; a UserError saying how to prepare it otherwise."""
  how = (f"Prepare it with `tfds build {tfds_name.split(':')[0]} --data_dir={data_dir}` where the data can be "
         f"reached, or point the task's data_dir in gin (e.g. --gin.tasks.tfds_image_classification.data_dir) at the folder that holds it.")
  if not paths.exists(data_dir):
    raise UserError(f"TFDS data directory {data_dir!r} does not exist, so dataset {tfds_name!r} cannot be "
                    f"read. {how}")
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # tfds raises several types for unknown or absent datasets.
    raise UserError(f"TFDS dataset {tfds_name!r} is not available under {data_dir!r} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0]}). {how}") from e
  if not builder.is_prepared():
    raise UserError(f"TFDS dataset {tfds_name!r} is known but not prepared under {data_dir!r}. {how}")
  return builder


def _preprocess(image_key: str, label_key: str):
  def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda ex: {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int32)})
  return fn


@gin.configurable(module="tasks")
def tfds_image_classification(tfds_name: str = gin.REQUIRED, data_dir: str = gin.REQUIRED,
                              image_key: str = "image", label_key: str = "label", task_name: str = "") -> str:
  """Registers (once) and returns the name of a seqio task over a prepared TFDS image dataset.

  Examples are {'image': the encoded image bytes, 'label': int32}: decoding, cropping and resizing happen in the
  loader's workers (stream.train_transform / eval_transform; gin/tasks/tfds_image.gin sets them). A dataset built
  in ArrayRecord format (`tfds build --file_format=array_record`) is read directly; any other is prepared once
  into stream.cache_dir (`shardline data prepare`).

  Args:
    tfds_name: e.g. 'cifar10:3.0.2', or 'cifar10' for the version prepared under data_dir.
    data_dir: the TFDS data directory holding the prepared dataset.
    image_key, label_key: feature names in the TFDS dataset.
    task_name: the seqio task name; 'tfds_<name>' by default.
  """
  builder = check_prepared(tfds_name, data_dir)
  if ":" not in tfds_name:  # seqio wants a pinned version; take the prepared one.
    tfds_name = f"{tfds_name}:{builder.info.version}"
  name = task_name or "tfds_" + tfds_name.replace(":", "_").replace("/", "_").replace(".", "_")
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name,
        source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir,
                                    splits=list(builder.info.splits.keys()),
                                    decoders={image_key: tfds.decode.SkipDecoding()}),
        preprocessors=[_preprocess(image_key, label_key)],
        output_features={
            "image": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.string, rank=0),
            "label": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=0),
        },
    )
  if str(builder.info.file_format).lower().endswith("array_record"):
    splits.register_direct(name, lambda split: tfds_source.TfdsSource(
        tfds_name, data_dir, split, {image_key: "image", label_key: "label"}, encoded=(image_key,)))
  return name
