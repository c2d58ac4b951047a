"""Image-caption pairs from a TFDS dataset on disk (e.g. coco_captions), as a seqio task named in gin.

Nothing is downloaded; an absent or unprepared dataset stops with the message of tfds_image.check_prepared.
Captions are byte-tokenized (tasks/captions.py) when the split is prepared; images stay encoded and are decoded
and resized by the loader's workers (gin/tasks/tfds_image_text.gin sets the transforms). Datasets with several captions per image name the caption
feature by a '/'-separated path and take the first caption; an optional label feature feeds zero-shot
evaluation, and examples without one get label -1.
"""
import gin

from shardline.tasks.tensorflow_setup import seqio, tf  # first: TensorFlow quiet, off the GPUs
# pylint: disable=g-bad-import-order,wrong-import-order
import tensorflow_datasets as tfds  # noqa: E402

from shardline.tasks import captions
from shardline.tasks.tfds_image import check_prepared


def _feature(example, path: str):
  for key in path.split("/"):
    example = example[key]
  return example


def _nested(path: str, leaf):
  """{'a': {'b': leaf}} for the path 'a/b'."""
  for key in reversed(path.split("/")):
    leaf = {key: leaf}
  return leaf


def _preprocess(image_key: str, caption_key: str, label_key: str, text_length: int):
  def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    def one(ex):
      caption = _feature(ex, caption_key)
      if caption.shape.rank:  # several captions per image: take the first
        caption = caption[0]
      label = tf.cast(_feature(ex, label_key), tf.int32) if label_key else tf.constant(-1, tf.int32)
      return {"image": _feature(ex, image_key),  # the encoded bytes
              "text": captions.tokenize_caption(caption, text_length), "label": label}
    return dataset.map(one, num_parallel_calls=tf.data.AUTOTUNE)
  return fn


@gin.configurable(module="tasks")
def tfds_image_text(tfds_name: str = gin.REQUIRED, data_dir: str = gin.REQUIRED, text_length: int = 32,
                    image_key: str = "image",
                    caption_key: str = "captions/text", label_key: str = "", task_name: str = "") -> str:
  """Registers (once) and returns the name of a seqio image-text task over a prepared TFDS dataset.

  Args:
    tfds_name: e.g. 'coco_captions', or with a pinned version.
    data_dir: the TFDS data directory holding the prepared dataset.
    text_length: caption ids per example (bytes, end id, padding).
    image_key, caption_key, label_key: feature paths ('/' separates nested features); no label_key gives -1.
    task_name: the seqio task name; 'tfds_text_<name>' by default.
  """
  builder = check_prepared(tfds_name, data_dir)
  if ":" not in tfds_name:
    tfds_name = f"{tfds_name}:{builder.info.version}"
  name = task_name or "tfds_text_" + tfds_name.replace(":", "_").replace("/", "_").replace(".", "_")
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name,
        source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir,
                                    splits=list(builder.info.splits.keys()),
                                    decoders=_nested(image_key, tfds.decode.SkipDecoding())),
        preprocessors=[_preprocess(image_key, caption_key, label_key, text_length)],
        output_features=captions.output_features(encoded_images=True),
    )
  return name
