"""Collective matmul benchmarks for ViT-22B's fused input projection (width 6144 -> 3 x 6144 + 24576).

  python -m benchmarks.async_linear measured   # xla / async / pallas on the devices at hand, rings of 2, 4, 8
  python -m benchmarks.async_linear modelled   # the analytic TPU v4 overlap model (labelled as modelled)
  python -m benchmarks.async_linear chunking   # N chunked matmuls vs one matmul (the decomposition overhead)
  python -m benchmarks.async_linear cost       # what XLA's cost analysis says, for the record

`measured` times the forward all-gather-matmul of x [batch, 256, 6144] (the residual stream, sequence split over
the ring) with the fused weight [6144, 43008] (columns split over the ring). On a CPU host the devices are
simulated and share its cores, so the figures show correctness and relative compute only: no overlap can
appear where there is no separate network. 'pallas' is measured on TPU only: elsewhere the kernel exists as
the TPU interpret-mode simulator the tests use, which is not a timing.
"""
import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from benchmarks import timing
from shardline.launch import runtime
from shardline.kernels.collective_matmul import api as kernel_api
from shardline.partitioning import async_linear

WIDTH, TOKENS, FUSED = 6144, 256, 3 * 6144 + 24576
V4_PEAK_TFLOPS = 275.0
# ICI assumption for the model: 2400 Gbit/s per v4 chip over 6 links, i.e. 50 GB/s per link and direction.
V4_LINK_GBPS = 50.0


def _mesh(ring: int, devices) -> Mesh:
  return Mesh(np.asarray(devices).reshape(len(devices) // ring, ring), ("fsdp", "tensor"),
              axis_types=(AxisType.Auto,) * 2)


def _projection(impl: str, mesh: Mesh):
  if impl == "xla":
    return lambda x, w: jnp.einsum("bmk,kn->bmn", x, w)
  if impl == "async":
    return functools.partial(async_linear.all_gather_matmul, mesh=mesh, axis="tensor", batch_axes=("fsdp",))
  return kernel_api.forward_fn(mesh, "tensor", ("fsdp",), "pallas")


def measured(rings, impls, dtype, iters, width, fused):
  env = timing.environment()
  devices = jax.devices()
  print(f"# measured on {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, dtype {dtype}")
  print(f"# x [batch=1 per fsdp shard, {TOKENS}, {width}] @ w [{width}, {fused}]")
  print("| ring | impl | ms/call (median) | ms/call (min) | ratio to xla |")
  print("|---|---|---|---|---|")
  for ring in rings:
    mesh = _mesh(ring, devices)
    batch = len(devices) // ring
    x = jax.device_put(jnp.ones((batch, TOKENS, width), dtype), NamedSharding(mesh, P("fsdp", "tensor", None)))
    w = jax.device_put(jnp.ones((width, fused), dtype) / width, NamedSharding(mesh, P(None, "tensor")))
    base = None
    for impl in impls:
      fn = jax.jit(_projection(impl, mesh), out_shardings=NamedSharding(mesh, P("fsdp", None, "tensor")))
      t = timing.time_fn(fn, x, w, warmup=1, iters=iters)
      base = t["median"] if impl == "xla" else base
      ratio = f"{t['median'] / base:.2f}" if base else "-"
      print(f"| {ring} | {impl} | {1e3 * t['median']:.1f} | {1e3 * t['min']:.1f} | {ratio} |", flush=True)


def modelled(rings, batch_per_ring):
  """Per ring step max(matmul at peak, block bytes / link bandwidth) vs all-gather then matmul."""
  print(f"# MODELLED, not measured: TPU v4, {V4_PEAK_TFLOPS:.0f} TFLOP/s bf16 per chip at 100% of peak, "
        f"{V4_LINK_GBPS:.0f} GB/s per ICI link and direction; fused ViT-22B input projection, "
        f"{batch_per_ring} images of {TOKENS} tokens per ring, bf16.")
  print("| ring | matmul/step (us) | transfer/step uni (us) | serial AG+matmul (us) | ring uni (us) | "
        "ring bidi (us) | speed-up uni | speed-up bidi |")
  print("|---|---|---|---|---|---|---|---|")
  for ring in rings:
    rows = batch_per_ring * TOKENS // ring
    step_flops = 2 * rows * WIDTH * (FUSED // ring)
    block_bytes = rows * WIDTH * 2
    matmul = step_flops / (V4_PEAK_TFLOPS * 1e12)
    uni = block_bytes / (V4_LINK_GBPS * 1e9)
    bidi = uni / 2  # half of the block each way, over two links
    serial = (ring - 1) * uni + ring * matmul
    ring_uni = (ring - 1) * max(matmul, uni) + matmul
    ring_bidi = (ring - 1) * max(matmul, bidi) + matmul
    print(f"| {ring} | {1e6 * matmul:.1f} | {1e6 * uni:.1f} | {1e6 * serial:.1f} | {1e6 * ring_uni:.1f} | "
          f"{1e6 * ring_bidi:.1f} | {serial / ring_uni:.2f}x | {serial / ring_bidi:.2f}x |")


def chunking(chunks, dtype, iters):
  """One [M, K] x [K, N] matmul against N chunked matmuls of the same total size (the ring's compute)."""
  env = timing.environment()
  m, k, n = 8 * TOKENS, WIDTH, FUSED // 8
  print(f"# measured on {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, dtype {dtype}")
  print(f"# one [{m}, {k}] x [{k}, {n}] matmul vs the same rows in N chunks")
  x = jnp.ones((m, k), dtype)
  w = jnp.ones((k, n), dtype) / k
  whole = jax.jit(lambda x, w: x @ w)
  base = timing.time_fn(whole, x, w, iters=iters)["median"]
  print("| chunks | ms | overhead vs one matmul |")
  print("|---|---|---|")
  print(f"| 1 | {1e3 * base:.2f} | - |")
  for c in chunks:
    split = jax.jit(lambda x, w, c=c: jnp.concatenate([xi @ w for xi in jnp.split(x, c)], axis=0))
    t = timing.time_fn(split, x, w, iters=iters)["median"]
    print(f"| {c} | {1e3 * t:.2f} | {100 * (t / base - 1):+.1f}% |", flush=True)


def cost(ring=4):
  """XLA's own estimate for the compiled programs on TPU v4:2x2x1; it does not model overlap."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = topologies.get_topology_desc("v4:2x2x1", "tpu").devices
  mesh = _mesh(ring, devices)
  x = jax.ShapeDtypeStruct((8 // ring, TOKENS, WIDTH), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P("fsdp", "tensor", None)))
  w = jax.ShapeDtypeStruct((WIDTH, FUSED), jnp.bfloat16, sharding=NamedSharding(mesh, P(None, "tensor")))
  print("# XLA cost_analysis()['optimal_seconds'] on TPU v4:2x2x1 (an estimate that ignores overlap)")
  for impl in ("xla", "async"):
    compiled = jax.jit(_projection(impl, mesh), out_shardings=NamedSharding(mesh, P("fsdp", None, "tensor"))
                       ).lower(x, w).compile()
    print(f"{impl}: {1e6 * compiled.cost_analysis()['optimal_seconds']:.1f} us")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("mode", choices=("measured", "modelled", "chunking", "cost"))
  parser.add_argument("--rings", default="2,4,8")
  parser.add_argument("--impls", default=None, help="default: xla,async, plus pallas on TPU")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--width", type=int, default=WIDTH)
  parser.add_argument("--fused", type=int, default=FUSED)
  parser.add_argument("--batch_per_ring", type=int, default=8)
  parser.add_argument("--chunks", default="2,4,8")
  parser.add_argument("--cpu_devices", type=int, default=8, help="simulated devices when the backend is CPU")
  args = parser.parse_args()
  runtime.configure(cpu_devices=args.cpu_devices, compilation_cache_dir="")
  rings = [int(r) for r in args.rings.split(",")]
  if args.mode == "measured":
    impls = args.impls or ("xla,async,pallas" if jax.default_backend() == "tpu" else "xla,async")
    measured(rings, impls.split(","), jnp.dtype(args.dtype), args.iters, args.width, args.fused)
  elif args.mode == "modelled":
    modelled(rings, args.batch_per_ring)
  elif args.mode == "chunking":
    chunking([int(c) for c in args.chunks.split(",")], jnp.dtype(args.dtype), args.iters)
  else:
    cost()


if __name__ == "__main__":
  main()
