"""Planning a run for hardware you do not have: will it fit, how is it sharded, how fast should it be.

For TPU targets the train step is compiled ahead of time against the topology's compile-only devices
(libtpu), so the memory figures include XLA's temporaries and the step-time figure is the compiler's own
estimate. For GPU targets the state is laid out on stand-in CPU devices (same mesh, same rules), so parameters
and optimizer state per device are exact and the FLOPs are counted from the partitioned program compiled for
those CPUs; GPU temporaries are unknown.
"""
import dataclasses
import re
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from shardline.models.base import BaseModel
from shardline.partitioning import mesh as mesh_lib
from shardline.partitioning import rules as rules_lib
from shardline.partitioning import shardings as shardings_lib
from shardline.training.state import batch_checks
from shardline.training.transfer import distill as distill_lib
from shardline.training.planning import mfu as flops_lib
from shardline.training.state import microbatches as microbatches_lib
from shardline.training.state import run_setup as setup_lib
from shardline.training.state import step as step_lib
from shardline.training.planning import targets as targets_lib

GIB = 2 ** 30


@dataclasses.dataclass
class Plan:
  """What `shardline plan` reports."""
  target: targets_lib.Target
  mesh: str
  rule_set: str
  sharding_table: str
  param_bytes: int  # per device
  opt_bytes: int  # per device
  temp_bytes: Optional[int]  # per device, from the compiled program (TPU)
  flops_per_device: Optional[float]
  estimated_seconds: Optional[float]  # the compiler's estimate (TPU); ignores communication overlap
  param_count: int
  microbatches: int = 1
  grad_bytes: int = 0  # per device: one gradient in the parameters' dtypes (part of the compiled temps)
  accumulator_bytes: int = 0  # per device: the float32 gradient sum of microbatching (part of the temps)
  trainable_count: Optional[int] = None  # parameters not frozen (optimizer.make_optimizer.frozen); None: all
  teacher_bytes: int = 0  # per device: a distillation teacher's parameters (train.distill)

  @property
  def total_bytes(self) -> int:
    return self.param_bytes + self.teacher_bytes + self.opt_bytes + (self.temp_bytes or 0)

  @property
  def activation_bytes(self) -> Optional[int]:
    """The compiled temporaries less one gradient and the accumulator: activations of one microbatch and XLA's
    other buffers (an estimate: XLA may alias or fuse some of them)."""
    if self.temp_bytes is None:
      return None
    return max(self.temp_bytes - self.grad_bytes - self.accumulator_bytes, 0)

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.target.hbm_bytes

  @property
  def estimated_mfu(self) -> Optional[float]:
    if not self.flops_per_device or not self.estimated_seconds:
      return None
    return self.flops_per_device / self.estimated_seconds / (self.target.peak_tflops * 1e12)


def _per_device_bytes(abstract, shardings) -> int:
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    shard_shape = sharding.shard_shape(leaf.shape) if isinstance(sharding, NamedSharding) else leaf.shape
    total += int(np.prod(shard_shape)) * jnp.dtype(leaf.dtype).itemsize
  return total


def collapsed_table(abstract_params, logical, shardings) -> str:
  """One line per parameter (path, shape, logical axes, mesh sharding); unrolled layers (block_3, layer_12)
  collapse into one line with a count."""
  rows: Dict[str, List] = {}
  order = []
  for line in shardings_lib.describe_shardings(abstract_params, logical, shardings).splitlines():
    path, rest = line.split("  ", 1)
    key = re.sub(r"(block|layer|blocks|layers)_\d+", r"\1_*", path)
    if key not in rows:
      rows[key] = [rest.strip(), 0]
      order.append(key)
    rows[key][1] += 1
  width = max(len(k) for k in order)
  lines = []
  for key in order:
    rest, count = rows[key]
    times = f"  (x{count})" if count > 1 else ""
    lines.append(f"{key:<{width}}  {re.sub(r' {2,}', '  ', rest)}{times}")
  return "\n".join(lines)


# XLA spends least effort on the program's speed: TPU plans take 2-3x less wall time. Memory figures moved by
# -7.8% to 0.0% on the shipped pod experiments (BENCHMARKS.md), and the step-time estimate is the unoptimised
# schedule's, so it is not reported.
QUICK_COMPILE_OPTIONS = {"exec_time_optimization_effort": -1.0}


def plan(model: BaseModel, global_batch: int, target: targets_lib.Target, steps: int = 1000,
         microbatches: int = 1, quick: bool = False, distill: Optional[distill_lib.Distill] = None) -> Plan:
  """Lays the run out on the target and measures what it needs, without the hardware; `quick` compiles with
  QUICK_COMPILE_OPTIONS. With `distill`, the teacher's parameters and forward pass are part of the step."""
  if target.platform == "tpu":
    devices, target = targets_lib.tpu_devices(target)
  else:
    devices = jax.devices("cpu")[:target.num_devices]  # stand-ins; the caller provides enough
  run = setup_lib.build(model, steps, global_batch, devices=devices)
  batch_checks.check_batch_divisible(global_batch, run.partitioner, "the global batch")
  batch_checks.check_microbatches(global_batch, microbatches, run.partitioner)
  params_sharding = run.state_sharding.params
  table = collapsed_table(run.abstract_state.params, run.logical_axes, params_sharding)
  param_bytes = _per_device_bytes(run.abstract_state.params, params_sharding)
  opt_bytes = _per_device_bytes(run.abstract_state.opt_state, run.state_sharding.opt_state)
  float32_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, microbatches_lib.ACCUMULATOR_DTYPE),
                                run.abstract_state.params)
  accumulator_bytes = _per_device_bytes(float32_params, params_sharding) if microbatches > 1 else 0
  trainable_count, param_count = run.trainable()

  attach = lambda tree, shardings: jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)
  state = attach(run.abstract_state, run.state_sharding)
  batch = attach(model.batch_spec(global_batch), run.batch_sharding)
  teacher_inputs, teacher_sharding, teacher_bytes = (), None, 0
  if distill is not None:
    teacher_abstract, teacher_sharding = distill_lib.layout(distill, run)
    teacher_inputs = (attach(teacher_abstract, teacher_sharding),)
    teacher_bytes = _per_device_bytes(teacher_abstract, teacher_sharding)
  step = step_lib.train_step_fn(model, run.tx, run.schedule, microbatches=microbatches, frozen=run.frozen,
                                distill=distill)
  step_fn = step_lib.jit_train_step(step, run.partitioner, run.state_sharding, run.batch_sharding, teacher_sharding)
  temp, flops, seconds = None, None, None
  state_fits = param_bytes + teacher_bytes + opt_bytes <= target.hbm_bytes
  compiled = None
  with jax.set_mesh(run.partitioner.mesh):  # Pallas TPU kernels read the target generation from the mesh
    lowered = step_fn.lower(state, batch, *teacher_inputs)
    if target.platform == "tpu" and state_fits:  # no compile needed to know the state alone overflows
      try:
        compiled = lowered.compile(compiler_options=QUICK_COMPILE_OPTIONS if quick else None)
      except jax.errors.JaxRuntimeError as e:  # XLA's own verdict: the temporaries overflow HBM
        needed = re.search(r"temporaries \(([\d.]+)([GM])\)", str(e))
        if not needed or "RESOURCE_EXHAUSTED" not in str(e):
          raise
        temp = int(float(needed.group(1)) * (GIB if needed.group(2) == "G" else 2 ** 20))
        compiled = None
    if target.platform == "tpu" and state_fits and compiled is not None:
      memory = compiled.memory_analysis()
      temp = int(memory.temp_size_in_bytes)
      flops = flops_lib.compiled_flops(compiled)
      analysis = compiled.cost_analysis()
      analysis = (analysis[0] if isinstance(analysis, (list, tuple)) else analysis) or {}
      seconds = float(analysis.get("optimal_seconds", 0.0))
      seconds = seconds if seconds > 0 and not quick else None  # -1 or less where the cost model has none
    if flops is None:  # not compiled for this target: count the stand-in CPU program, partitioned the same way
      flops = flops_lib.compiled_flops(lowered.compile()) if target.platform == "gpu" else None
  return Plan(target, mesh_lib.describe(run.partitioner.mesh), rules_lib.rule_set_name(run.partitioner.rules),
              table, param_bytes, opt_bytes, temp, flops, seconds, param_count, microbatches, param_bytes,
              accumulator_bytes, trainable_count if run.frozen else None, teacher_bytes)


def _count(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def report(p: Plan) -> str:
  """The human-readable plan."""
  gib = lambda b: f"{b / GIB:.2f} GiB"
  lines = [f"Plan for {p.target.name} ({p.target.num_devices} x {p.target.device_kind}, "
           f"{gib(p.target.hbm_bytes)} HBM and {p.target.peak_tflops:.1f} TFLOP/s bf16 per device)",
           f"mesh {p.mesh} | rules {p.rule_set} | {_count(p.param_count)} parameters"
           + (f" ({_count(p.trainable_count)} trainable)" if p.trainable_count is not None else "")
           + (f" | {p.microbatches} microbatches" if p.microbatches > 1 else ""), "",
           "Parameters (path, shape, logical axes, mesh sharding):", p.sharding_table, "",
           "Memory per device:",
           f"  parameters        {gib(p.param_bytes)}"]
  if p.teacher_bytes:
    lines.append(f"  teacher           {gib(p.teacher_bytes)}   (distillation teacher's parameters; frozen, not saved)")
  lines.append(f"  optimizer state   {gib(p.opt_bytes)}")
  if p.temp_bytes is not None:
    lines.append(f"  compiled temps    {gib(p.temp_bytes)}   (activations, gradients, buffers; XLA), of which")
    lines.append(f"    gradients       {gib(p.grad_bytes)}")
    if p.microbatches > 1:
      lines.append(f"    accumulator     {gib(p.accumulator_bytes)}   (float32 gradient sum over {p.microbatches} "
                   "microbatches)")
    one = " of one microbatch" if p.microbatches > 1 else ""
    lines.append(f"    activations     {gib(p.activation_bytes)}   (activations{one} and XLA's other buffers; estimate)")
  elif p.target.platform == "tpu":
    lines.append("  compiled temps    not compiled: parameters and optimizer state alone overflow")
  else:
    lines.append("  compiled temps    not known without compiling for this target")
    if p.microbatches > 1:
      lines.append(f"  accumulator       {gib(p.accumulator_bytes)}   (float32 gradient sum over {p.microbatches} "
                   "microbatches; not in the total above)")
  lines.append(f"  total             {gib(p.total_bytes)} of {gib(p.target.hbm_bytes)}")
  if p.flops_per_device:
    lines.append(f"FLOPs per step per device: {p.flops_per_device / 1e12:.4g} TFLOP")
  if p.target.platform == "tpu" and p.temp_bytes is not None and not p.estimated_seconds:
    lines.append("Estimated step time: the compiler gave no estimate for this program.")
  if p.estimated_seconds:
    lines.append(f"Estimated step time (compiler estimate, ignores overlap): {p.estimated_seconds * 1e3:.1f} ms; "
                 f"estimated MFU {100 * p.estimated_mfu:.1f}%")
  if p.fits:
    lines.append(f"FITS: {gib(p.total_bytes)} <= {gib(p.target.hbm_bytes)} per device.")
  else:
    lines.append(f"DOES NOT FIT: {gib(p.total_bytes)} > {gib(p.target.hbm_bytes)} per device; try a larger "
                 "topology or fsdp axis, remat (remat_policy='full'), a smaller batch, bfloat16 moments "
                 "(optimizer.make_optimizer.moments_dtype='bfloat16'), Adafactor, or gradient accumulation "
                 "(--gin.MICROBATCHES=k).")
  return "\n".join(lines)
