"""Shared test helpers: tolerances, tiny configs, meshes, and running the CLI in a subprocess."""
import dataclasses
import os
import subprocess
import sys
from typing import Any, Callable, Dict

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from shardline.models.vit22b.config import ViT22BConfig
from shardline.partitioning import axes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The one dtype-keyed tolerance table: (rtol, atol) for comparisons across meshes and implementations.
TOLERANCES = {
    "float32": (2e-5, 2e-5),
    "bfloat16": (2e-2, 2e-2),
}


def tolerance(dtype, scale: float = 1.0) -> dict:
  """{'rtol': ..., 'atol': ...} for a dtype (name or jnp dtype), optionally loosened by `scale`."""
  rtol, atol = TOLERANCES[jax.numpy.dtype(dtype).name]
  return {"rtol": rtol * scale, "atol": atol * scale}


def tiny_vit(**overrides) -> ViT22BConfig:
  """A tiny ViT-22B for 8x8 digits with 8 heads, so a tensor axis of 8 divides them."""
  base = dict(num_classes=10, image_size=8, channels=1, patch_size=2, width=64, depth=2, mlp_dim=128,
              num_heads=8, head_dim=8)
  base.update(overrides)
  return ViT22BConfig(**base)


def mesh(data=1, fsdp=1, tensor=1, expert=1, devices=None) -> Mesh:
  """A (data, fsdp, tensor, expert) mesh over the first devices."""
  shape = (data, fsdp, tensor, expert)
  devices = np.asarray(devices if devices is not None else jax.devices()[:int(np.prod(shape))])
  return Mesh(devices.reshape(shape), axes.MESH_AXES, axis_types=(AxisType.Auto,) * 4)


@dataclasses.dataclass
class ShardedTraining:
  """A model's initial state, shardings and jitted train step on one partitioner (for parity tests)."""
  state: Any
  sharding: Any
  batch_sharding: Dict[str, Any]
  train: Callable


def sharded_training(model, partitioner, tx, batch_size: int, learning_rate: float) -> ShardedTraining:
  """Initialises `model` for `tx` on `partitioner` and jits its train step at a constant learning rate."""
  from shardline.training.state import step as step_lib  # pylint: disable=g-import-not-at-top
  from shardline.training.state import train_state  # pylint: disable=g-import-not-at-top
  spec = model.batch_spec(batch_size)
  _, sharding, _ = train_state.abstract_state(model, tx, spec, partitioner)
  batch_sharding = {k: partitioner.sharding(model.batch_axes()[k]) for k in spec}
  state = train_state.init_state(model, tx, spec, partitioner, sharding)
  train = step_lib.jit_train_step(step_lib.train_step_fn(model, tx, lambda s: learning_rate), partitioner, sharding,
                                  batch_sharding)
  return ShardedTraining(state, sharding, batch_sharding, train)


def shardline_command(*args: str):
  """The argv of `python -m shardline.launch.cli <args>`."""
  return [sys.executable, "-m", "shardline.launch.cli", *args]


def subprocess_env(env: dict = None) -> dict:
  return dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))


def run_shardline(*args: str, timeout: float = 600, env: dict = None, cwd=REPO) -> subprocess.CompletedProcess:
  """Runs `python -m shardline.launch.cli <args>` in a subprocess (from the repository root by default)."""
  return subprocess.run(shardline_command(*args), capture_output=True, text=True, timeout=timeout,
                        env=subprocess_env(env), cwd=cwd)


def tiny_train_args(model_dir, steps: int, *extra: str):
  """`shardline train` arguments for the tiny ViT-22B on digits: a metrics line and row every step."""
  return ("train", "--gin_file=experiments/vit22b_tiny_digits_cpu8.gin", f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.train.steps={steps}", "--gin.train.log_every=1", "--gin.train.eval_every=1000",
          "--gin.train.checkpoint_every=3", *extra)


def train_metric(model_dir, name: str) -> dict:
  """step -> a metric from MODEL_DIR/metrics/train.jsonl; a step logged twice (before and after a resume) keeps
  its last value."""
  import json  # pylint: disable=g-import-not-at-top
  values = {}
  with open(os.path.join(model_dir, "metrics", "train.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      values[row["step"]] = row[name]
  return values


def train_losses(model_dir) -> dict:
  """step -> loss from MODEL_DIR/metrics/train.jsonl (see train_metric)."""
  return train_metric(model_dir, "loss")


def save_initial_checkpoint(experiment: str, model_dir, step: int, global_batch: int, seed: int = 1):
  """Saves the freshly initialised state of `experiment`'s model as checkpoint `step` in `model_dir` (with its
  fingerprint, as a training run would) and returns the model; a stand-in for a trained run where the values
  do not matter."""
  from shardline.launch import gin_config
  from shardline.launch import plan_inputs  # pylint: disable=g-import-not-at-top
  from shardline.training.lifecycle import checkpoints
  from shardline.training.state import run_setup as setup
  from shardline.training.state import train_state  # pylint: disable=g-import-not-at-top
  gin_config.parse([experiment], ["MODEL_DIR='unused'"])
  model = plan_inputs.plan_run().model
  run = setup.build(model, total_steps=10, global_batch=global_batch)
  state = train_state.init_state(model, run.tx, model.batch_spec(1), run.partitioner, run.state_sharding, seed=seed)
  saver = checkpoints.Checkpointer(str(model_dir), async_save=False)
  saver.save(step, state, {"fingerprint": model.fingerprint()})
  saver.close()
  return model


def read_split(task: str, split: str, cache_dir, transform=None) -> dict:
  """Every example of a task's split through the input layer (prepared under cache_dir on first use, or read
  directly), transformed as the loader would with seed 0 and epoch 0, stacked into arrays."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from shardline.data import pipeline  # pylint: disable=g-import-not-at-top
  from shardline.data.settings import StreamSettings  # pylint: disable=g-import-not-at-top
  from shardline.tasks import splits  # pylint: disable=g-import-not-at-top
  source = splits.open_source(task, split, StreamSettings(cache_dir=str(cache_dir)))
  first = source[0] if transform is None else transform(source[0], np.random.default_rng(0))
  loader = pipeline.RowLoader(source, first.keys(), transform, seed=0)
  indices = np.arange(len(source))
  return loader.stack(indices, np.zeros_like(indices))


def run_cli_in_process(*args: str):
  """Runs `shardline <args>` in this process (no interpreter start-up, and the compilations this process has
  already cached), as the console script would: the same argument parsing, gin, runtime and command. Returns
  (exit code, stdout, stderr); a UserError's os._exit becomes the returned code."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from unittest import mock  # pylint: disable=g-import-not-at-top
  from shardline.launch import cli  # pylint: disable=g-import-not-at-top

  class _Exit(Exception):
    def __init__(self, code):
      super().__init__(code)
      self.code = code

  def exit_now(code):
    raise _Exit(code)

  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
      mock.patch("shardline.launch.reporting.os._exit", exit_now):
    try:
      code = cli.main(list(args))
    except _Exit as e:
      code = e.code
  return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
