"""Times the training step of any gin-configured run, on whatever devices are present.

  python -m benchmarks.train_step --gin_file=experiments/vit22b_slice_h100.gin [--gin.X=Y ...] \\
      [--steps 20] [--warmup 3] [--record] [--profile_dir DIR [--profile_steps 2]]

The step runs on synthetic batches of the model's own shapes (no data loading), after `--warmup` steps, and
`--steps` steps are timed between two device synchronisations. FLOPs are matmul FLOPs counted from the compiled
program (training/planning/hlo/flops.py): "model" FLOPs from the step compiled without rematerialisation, "hardware"
FLOPs from the step as run. MFU = model FLOP/s per device / the device's dense bf16 peak; HFU uses hardware
FLOPs. `--record` appends the row to BENCHMARKS.md. `--profile_dir` then traces `--profile_steps` more steps of
the same compiled step with jax.profiler into DIR and prints the ops that took the most time
(training/planning/trace_summary.py).
"""
import argparse
import dataclasses
import os
import sys
import time
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from shardline.launch import flags
from shardline.launch import gin_config
from shardline.launch import runtime
from shardline.launch import plan_inputs
from shardline.training.planning import hardware
from shardline.training.planning import mfu
from shardline.training.planning import trace_summary
from shardline.training.state import run_setup as setup_lib
from shardline.training.state import step as step_lib
from shardline.training.state import train_state

BENCHMARKS_MD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")
RECORD_HEADER = "## Recorded by benchmarks.train_step"


def synthetic_batch(model, batch_size: int, shardings) -> Dict[str, jax.Array]:
  """Random inputs of the model's batch shapes, placed with the run's shardings."""
  spec = model.batch_spec(batch_size)
  rng = np.random.default_rng(0)
  out = {}
  for name, s in spec.items():
    if jnp.issubdtype(s.dtype, jnp.integer):
      value = rng.integers(0, 2, size=s.shape).astype(s.dtype)
    else:
      value = rng.standard_normal(s.shape).astype(s.dtype)
    out[name] = jax.device_put(value, shardings[name])
  return out


def _without_remat(model):
  config = getattr(model, "config", None)
  if not dataclasses.is_dataclass(config) or getattr(config, "remat_policy", "none") == "none":
    return None
  return type(model)(dataclasses.replace(config, remat_policy="none"))


def _peak_memory() -> Optional[int]:
  stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure(model, batch_size: int, steps: int, warmup: int, profile_dir: Optional[str] = None,
            profile_steps: int = 2) -> Dict[str, float]:
  """Compiles and times `steps` training steps, then traces `profile_steps` more into `profile_dir` if given;
  returns the figures."""
  run = setup_lib.build(model, total_steps=1000, global_batch=batch_size)
  batch = synthetic_batch(model, batch_size, run.batch_sharding)
  state = train_state.init_state(model, run.tx, model.batch_spec(1), run.partitioner, run.state_sharding)
  step = step_lib.jit_train_step(step_lib.train_step_fn(model, run.tx, run.schedule), run.partitioner,
                                 run.state_sharding, run.batch_sharding)
  start = time.time()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.time() - start
  hardware_flops = mfu.compiled_flops(compiled) or 0.0
  plain = _without_remat(model)
  if plain is None:
    model_flops = hardware_flops
  else:
    plain_step = step_lib.jit_train_step(step_lib.train_step_fn(plain, run.tx, run.schedule), run.partitioner,
                                         run.state_sharding, run.batch_sharding)
    model_flops = mfu.compiled_flops(plain_step.lower(state, batch).compile()) or 0.0
  state, metrics = compiled(state, batch)  # at least one warm-up step: the first run allocates
  for _ in range(warmup - 1):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / steps
  if profile_dir:
    with jax.profiler.trace(profile_dir):
      for n in range(profile_steps):
        with jax.profiler.StepTraceAnnotation("train", step_num=n):
          state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
  kind = jax.devices()[0].device_kind
  peak = hardware.peak_tflops_per_device(kind)
  return {"step_seconds": seconds, "examples_per_sec": batch_size / seconds,
          "model_tflops_per_device": model_flops / seconds / 1e12,
          "hardware_tflops_per_device": hardware_flops / seconds / 1e12,
          "mfu": model_flops / seconds / (peak * 1e12) if peak else None,
          "hfu": hardware_flops / seconds / (peak * 1e12) if peak else None,
          "peak_memory_gib": (_peak_memory() or 0) / 2 ** 30 or None, "compile_seconds": compile_seconds,
          "loss": float(metrics["loss"][0]), "devices": jax.device_count(), "device_kind": kind}


def format_result(name: str, r: Dict[str, float]) -> str:
  pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
  memory = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f} GiB"
  return (f"| {name} | {r['devices']} x {r['device_kind']} | {1e3 * r['step_seconds']:.1f} | "
          f"{r['examples_per_sec']:.1f} | {r['model_tflops_per_device']:.3f} | {pct(r['mfu'])} | {pct(r['hfu'])} | "
          f"{memory} |")


TABLE_HEADER = ("| run | devices | ms/step | examples/s | model TFLOP/s/device | MFU | HFU | peak memory |\n"
                "|---|---|---|---|---|---|---|---|")


def record(name: str, r: Dict[str, float], command: str) -> None:
  """Appends the row, with its date, jax version and command, to BENCHMARKS.md."""
  env = timing.environment()
  with open(BENCHMARKS_MD) as f:
    text = f.read()
  if RECORD_HEADER not in text:
    text += f"\n{RECORD_HEADER}\n\n"
  text += f"\n{env['date']}, jax {env['jax']}, `{command}`\n\n{TABLE_HEADER}\n{format_result(name, r)}\n"
  with open(BENCHMARKS_MD, "w") as f:
    f.write(text)


def main(argv: Sequence[str] = None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  flags.add_gin_flags(parser)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--name", default=None, help="the row's name (default: the gin files)")
  parser.add_argument("--record", action="store_true", help="append the result to BENCHMARKS.md")
  parser.add_argument("--profile_dir", default=None, help="trace more steps here and print the top ops by time")
  parser.add_argument("--profile_steps", type=int, default=2)
  argv = list(sys.argv[1:] if argv is None else argv)
  args, overrides = flags.parse_args(parser, argv)
  gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides),
                   [p for e in args.gin_search_paths for p in e.split(",") if p],
                   allow_missing=plan_inputs.PLAN_NEEDS_NO, allow_missing_data_libraries=True)
  runtime.configure()
  model, batch_size = plan_inputs.plan_run()[:2]
  result = measure(model, batch_size, args.steps, args.warmup, args.profile_dir, args.profile_steps)
  env = timing.environment()
  name = args.name or ",".join(os.path.basename(f) for f in args.gin_file)
  print(f"# {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}; compile {result['compile_seconds']:.1f}s; "
        f"final loss {result['loss']:.4f}")
  print(TABLE_HEADER)
  print(format_result(name, result))
  if args.profile_dir:
    print(trace_summary.summarise(args.profile_dir))
  if args.record:
    record(name, result, "python -m benchmarks.train_step " + " ".join(argv))
  return result


if __name__ == "__main__":
  main()
