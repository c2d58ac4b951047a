"""The simulated radar (simulator.py) as a seqio task named in gin, with its splits cached on disk.

Example i of a split is simulator.simulate(config, seed) with a seed derived from (split, i, task seed), so the
splits are disjoint and every example is reproducible. Generating takes tens of milliseconds per example, so a
split is written once to `cache_dir` as .npz, keyed by everything that defines it, and read back afterwards.
"""
import dataclasses
import hashlib
import json
import os
import sys
from typing import Dict, Tuple

import gin
import numpy as np

from shardline.tasks.tensorflow_setup import seqio, tf
from shardline.core import paths
from shardline.tasks.precipitation import features, simulator

SPLIT_OFFSETS = {"train": 0, "validation": 1, "test": 2}
SIMULATOR_VERSION = 2  # bump when simulator.py changes what it produces, so caches are rebuilt
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "shardline", "precipitation")


def _seed(split: str, index: int, seed: int) -> int:
  return int(np.random.SeedSequence([seed, SPLIT_OFFSETS[split], index]).generate_state(1)[0])


def generate_split(config: simulator.SimulatorConfig, split: str, num_examples: int, seed: int,
                   cache_dir: str) -> Dict[str, np.ndarray]:
  """'radar', 'state', 'target' arrays of a split, from the cache or simulated (with a progress line)."""
  key = json.dumps([dataclasses.asdict(config), split, num_examples, seed, SIMULATOR_VERSION], sort_keys=True)
  path = os.path.join(cache_dir, f"{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz")
  if os.path.exists(path):
    with np.load(path) as data:
      return dict(data)
  out = {name: [] for name in features.NAMES}
  for i in range(num_examples):
    example = simulator.simulate(config, _seed(split, i, seed))
    for name in features.NAMES:
      out[name].append(example[name])
    if (i + 1) % 256 == 0 or i + 1 == num_examples:
      print(f"\rSimulating precipitation {split}: {i + 1}/{num_examples} examples", end="", file=sys.stderr)
  print(file=sys.stderr)
  arrays = {name: np.stack(v) for name, v in out.items()}
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + f".tmp{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # readers never see a partial file
  return arrays


@gin.configurable(module="tasks")
def precipitation_simulation(num_train: int = 2048, num_test: int = 256, seed: int = 0,
                             cache_dir: str = DEFAULT_CACHE, context: int = 64, target: int = 32,
                             input_frames: int = 4, lead_times: Tuple[int, ...] = (1, 3, 6, 12),
                             domain: int = 96) -> str:
  """Registers (once) and returns the name of the simulated-radar seqio task with these settings.

  Args:
    num_train, num_test: examples in the 'train' and 'test' splits ('validation' has num_test too).
    seed: the task seed; splits are disjoint for any seed.
    cache_dir: where generated splits are kept.
    context, target, input_frames, lead_times, domain: see simulator.SimulatorConfig.
  """
  cache_dir = paths.check_local(cache_dir, "tasks.precipitation_simulation.cache_dir", "the simulated splits are "
                                "cached on local disk (each host simulates the same examples).")
  config = simulator.SimulatorConfig(domain=domain, context=context, target=target, input_frames=input_frames,
                                     lead_times=tuple(lead_times))
  sizes = {"train": num_train, "validation": num_test, "test": num_test}
  name = "precipitation_sim_" + hashlib.sha1(json.dumps([dataclasses.asdict(config), sizes, seed]).encode()
                                               ).hexdigest()[:10]
  if name not in seqio.TaskRegistry.names():
    def dataset_fn(split: str, shuffle_files: bool, seed_=None) -> tf.data.Dataset:
      del shuffle_files, seed_
      return tf.data.Dataset.from_tensor_slices(generate_split(config, split, sizes[split], seed, cache_dir))
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, splits=tuple(sizes),
                                                                  num_input_examples=sizes),
                           preprocessors=[], output_features=features.output_features())
  return name
