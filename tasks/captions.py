"""Caption tokenization shared by the image-text tasks: seqio's byte vocabulary (no download), the bytes, an
end id, then padding to a fixed length."""
from shardline.tasks.tensorflow_setup import seqio, tf

VOCABULARY = seqio.ByteVocabulary()


def tokenize_caption(caption: tf.Tensor, length: int) -> tf.Tensor:
  """A scalar string -> [length] int32 ids: bytes + 3, the end id (1), padding (0); cut to fit."""
  ids = VOCABULARY.encode_tf(caption)[:length - 1]
  ids = tf.concat([ids, [VOCABULARY.eos_id]], axis=0)
  ids = tf.pad(ids, [[0, length - tf.shape(ids)[0]]], constant_values=VOCABULARY.pad_id)
  return tf.ensure_shape(tf.cast(ids, tf.int32), [length])


def output_features(encoded_images: bool = False) -> dict:
  """The seqio features of an image-text task: image (float32 [H, W, C], or the encoded bytes), text ids and an
  integer label."""
  image = dict(dtype=tf.string, rank=0) if encoded_images else dict(dtype=tf.float32, rank=3)
  return {
      "image": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, **image),
      "text": seqio.Feature(VOCABULARY, add_eos=False, dtype=tf.int32, rank=1),
      "label": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=0),
  }
