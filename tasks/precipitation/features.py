"""The features of a precipitation example, shared by the simulator task and the real-data loader.

  radar  [input_frames, context, context] float32: precipitation rate (mm/h), oldest frame first.
  state  [6, context, context] float32: the weather-model state at the forecast time, in the order of
         simulator.STATE_CHANNELS (u, v, du/dt, dv/dt, humidity, instability).
  target [leads, target, target] float32: precipitation rate (mm/h) at each lead time over the central window.
"""
from shardline.tasks.tensorflow_setup import seqio, tf

NAMES = ("radar", "state", "target")


def output_features() -> dict:
  return {name: seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.float32, rank=3)
          for name in NAMES}
