"""Image-caption pairs from a TFDS dataset on disk (e.g. coco_captions), as a seqio task named in gin.

Nothing is downloaded; an absent or unprepared dataset stops with the message of tfds_image.check_prepared.
Captions are byte-tokenized (tasks/captions.py). Datasets with several captions per image name the caption
feature by a '/'-separated path and take the first caption; an optional label feature feeds zero-shot
evaluation, and examples without one get label -1.
"""
import gin
import seqio
import tensorflow as tf

from shardline.tasks import captions
from shardline.tasks.tfds_image import check_prepared



def to_image(image: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """A decoded TFDS image -> float32 in [0, 1], `channels` channels, image_size x image_size."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  if image.shape[-1] != channels:
    image = tf.image.rgb_to_grayscale(image) if channels == 1 else tf.image.grayscale_to_rgb(image)
  return tf.image.resize(image, (image_size, image_size), antialias=True)

def _feature(example, path: str):
  for key in path.split("/"):
    example = example[key]
  return example


def _preprocess(image_key: str, caption_key: str, label_key: str, image_size: int, channels: int,
                text_length: int):
  def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    def one(ex):
      caption = _feature(ex, caption_key)
      if caption.shape.rank:  # several captions per image: take the first
        caption = caption[0]
      label = tf.cast(_feature(ex, label_key), tf.int32) if label_key else tf.constant(-1, tf.int32)
      return {"image": to_image(_feature(ex, image_key), image_size, channels),
              "text": captions.tokenize_caption(caption, text_length), "label": label}
    return dataset.map(one, num_parallel_calls=tf.data.AUTOTUNE)
  return fn


@gin.configurable(module="tasks")
def tfds_image_text(tfds_name: str = gin.REQUIRED, data_dir: str = gin.REQUIRED, image_size: int = 224,
                    channels: int = 3, text_length: int = 32, image_key: str = "image",
                    caption_key: str = "captions/text", label_key: str = "", task_name: str = "") -> str:
  """Registers (once) and returns the name of a seqio image-text task over a prepared TFDS dataset.

  Args:
    tfds_name: e.g. 'coco_captions', or with a pinned version.
    data_dir: the TFDS data directory holding the prepared dataset.
    image_size, channels: images are resized and converted to this geometry.
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
                                    splits=list(builder.info.splits.keys())),
        preprocessors=[_preprocess(image_key, caption_key, label_key, image_size, channels, text_length)],
        output_features=captions.output_features(),
    )
  return name
