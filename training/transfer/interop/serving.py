"""A serving export of any shardline classifier: a TensorFlow SavedModel made with jax2tf, batch-polymorphic.

The SavedModel's 'serving_default' signature takes the model's input features (every feature of its training
batch but the label; for a ViT, 'image' [batch, H, W, C] float32 in the value range it was trained on) for any
batch size, and returns {'logits': [batch, classes]}. The forward pass is the model's own, serialised as StableHLO
for the platforms asked for (jax2tf's native serialisation); the weights are tf.Variables, saved under variables/
rather than inside the graph, so there is no 2 GiB limit. TensorFlow Serving, tf.saved_model.load or any TF
runtime with XLA runs it.

TensorFlow and jax2tf are imported inside the functions: importing this module pulls neither in.
"""
import os
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from flax import traverse_util

from shardline.core import paths
from shardline.core.errors import UserError, stderr_silenced
from shardline.models.base import BaseModel

PLATFORMS = ("cpu", "cuda", "tpu")
SIGNATURE = "serving_default"
# Features of a training batch that are targets, not inputs.
TARGETS = ("label", "weight")


def _tensorflow():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with stderr_silenced():  # TensorFlow's C++ start-up logs (CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
  return tf


def input_features(model: BaseModel) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
  """The serving inputs: feature -> (shape without the batch, dtype)."""
  return {name: (tuple(spec.shape[1:]), np.dtype(spec.dtype)) for name, spec in model.batch_spec(1).items()
          if name not in TARGETS}


def check_platforms(platforms: Sequence[str]) -> Tuple[str, ...]:
  """The platforms to serialise for; a UserError for unknown ones."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise UserError(f"--platforms={','.join(platforms)}: the SavedModel can be serialised for "
                    f"{', '.join(PLATFORMS)} (comma-separated), not {', '.join(unknown) or 'nothing'}.")
  return tuple(platforms)


def export_saved_model(model: BaseModel, read: Callable[[str], np.ndarray], names: Sequence[str], output: str,
                       platforms: Sequence[str] = ("cpu",)) -> Dict[str, object]:
  """Writes the SavedModel of `model` with the parameters `read(name)` for every name in `names` to the folder
  `output` (local, gs:// or s3://). Each parameter becomes a tf.Variable as it is read, so the host holds one copy.
  Returns the signature: {'inputs': {feature: '[None, ...] dtype'}, 'logits': [None, classes]}."""
  if type(model).class_logits is BaseModel.class_logits:
    raise UserError(f"{type(model).__name__} predicts no class logits, so it has no classifier to serve; "
                    "--to=serving exports classifiers (vit22b.ImageClassifier and its configurations).")
  tf = _tensorflow()
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  features = input_features(model)
  variables = traverse_util.unflatten_dict({tuple(name.split("/")): tf.Variable(read(name), trainable=False,
                                                                                 name=name.replace("/", "."))
                                            for name in names})
  polymorphic = {name: f"(b, {', '.join(map(str, shape))})" if shape else "(b,)"
                 for name, (shape, _) in features.items()}
  forward = jax2tf.convert(lambda params, inputs: model.class_logits(params, inputs),
                           polymorphic_shapes=[None, polymorphic], with_gradient=False,
                           native_serialization_platforms=tuple(platforms))
  specs = {name: tf.TensorSpec([None, *shape], tf.as_dtype(dtype), name=name)
           for name, (shape, dtype) in features.items()}

  class Serving(tf.Module):
    """The parameters as variables, and the polymorphic forward pass as the serving signature."""

    def __init__(self):
      super().__init__()
      self.params = variables

    @tf.function(input_signature=[specs], autograph=False)
    def serve(self, inputs):
      return {"logits": forward(self.params, inputs)}

  module = Serving()
  concrete = module.serve.get_concrete_function()
  with paths.staged_dir(output) as local:
    tf.saved_model.save(module, local, signatures={SIGNATURE: concrete})
  return {"inputs": {name: f"{[None, *shape]} {dtype.name}" for name, (shape, dtype) in features.items()},
          "logits": concrete.structured_outputs["logits"].shape.as_list()}


def load(path: str):
  """The serving function of a SavedModel written by `export_saved_model`: inputs (numpy, by feature name) ->
  logits (numpy)."""
  tf = _tensorflow()
  signature = tf.saved_model.load(path).signatures[SIGNATURE]
  return lambda **inputs: signature(**{k: tf.constant(v) for k, v in inputs.items()})["logits"].numpy()
