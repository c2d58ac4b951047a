"""Sweeps the GPU attention kernels' blocks, warps and pipeline stages, each kernel on its own.

  python -m benchmarks.attention_tuning [--shapes vit22b-256,long-8192] [--iters 10]

The forward, dq and dk/dv kernels are timed separately (on-device medians after warm-up) for every candidate,
so the best of each combine; a candidate the GPU cannot run (too much shared memory) is reported and skipped.
The winners go into `kernels/attention/gpu.Tuning`'s defaults.
"""
import argparse
import itertools

import jax
import jax.numpy as jnp

from benchmarks import attention as attention_bench
from benchmarks import timing
from shardline.kernels.attention import gpu

BLOCKS = {"fwd": [(64, 64), (128, 32), (128, 64), (128, 128), (64, 128)],
          "dq": [(64, 32), (64, 64), (128, 32), (128, 64)],
          "dkv": [(32, 64), (32, 128), (64, 64), (64, 128), (128, 64)]}
WARPS = (4, 8)
STAGES = (2, 3)


def _kernel_fn(kernel, q, k, v, do, kv_len, mask, block, blocks, warps, stages):
  common = dict(scale=q.shape[-1] ** -0.5, kv_len=kv_len, mask_kind=mask, block_size=block,
                num_warps=warps, num_stages=stages, block_q=blocks[0], block_k=blocks[1])
  if kernel == "fwd":
    return jax.jit(lambda q, k, v: gpu.forward(q, k, v, None, None, **common))
  o, lse = gpu.forward(q, k, v, None, None, **dict(common, block_q=64, block_k=64, num_warps=4, num_stages=2))
  delta = jnp.einsum("blhd,blhd->bhl", o.astype(jnp.float32), do.astype(jnp.float32))  # rowsum(o * do): [b, h, l]
  fn = gpu.dq if kernel == "dq" else gpu.dkv
  return jax.jit(lambda q, k, v: fn(q, k, v, None, None, do, lse, delta, **common))


def sweep(shape, iters):
  name, b, l, h, d, mask, block = shape
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, do = [jax.random.normal(key, (b, l, h, d), jnp.float32).astype(jnp.bfloat16) for key in keys]
  flops = 4 * b * h * l * l * d * attention_bench.kept_fraction(l, mask, block)
  share = {"fwd": 1.0, "dq": 1.5, "dkv": 2.0}  # matmuls per kernel relative to the forward's two
  best = {}
  for kernel, blocks in BLOCKS.items():
    rows = []
    for blk, warps, stages in itertools.product(blocks, WARPS, STAGES):
      if l % blk[0] or l % blk[1]:
        continue
      try:
        t = timing.time_fn(_kernel_fn(kernel, q, k, v, do, l, mask, block, blk, warps, stages), q, k, v,
                           warmup=2, iters=iters)["median"]
      except Exception as e:  # pylint: disable=broad-except  (a configuration the GPU cannot run)
        print(f"| {name} | {kernel} | {blk} | {warps} | {stages} | n/a: {str(e).splitlines()[0][:60]} |")
        continue
      rows.append((t, blk, warps, stages))
      print(f"| {name} | {kernel} | {blk} | {warps} | {stages} | {1e3 * t:.3f} ms | "
            f"{share[kernel] * flops / t / 1e12:.1f} TFLOP/s |", flush=True)
    if rows:
      best[kernel] = min(rows)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shapes", default="vit22b-256,long-8192")
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args()
  env = timing.environment()
  print(f"# {env['device']}, jax {env['jax']}, {env['date']}, bfloat16")
  print("| shape | kernel | blocks (q, k) | warps | stages | median | TFLOP/s |\n|---|---|---|---|---|---|---|")
  wanted = args.shapes.split(",")
  for shape in attention_bench.SHAPES:
    if shape[0] in wanted:
      for kernel, (t, blk, warps, stages) in sweep(shape, args.iters).items():
        print(f"# best {shape[0]} {kernel}: blocks {blk}, warps {warps}, stages {stages}: {1e3 * t:.3f} ms")


if __name__ == "__main__":
  main()
