"""Attention benchmark: forward and forward+backward TFLOP/s for pallas, xla and cudnn, measured in one run.

  python -m benchmarks.attention [--impls pallas,xla,cudnn] [--dtype bfloat16] [--iters 10]

Shapes: ViT-22B (256 tokens x 48 heads x 128), ViT at 576 and 1024 tokens, MGDT (156 tokens = 4 timesteps x 39,
block-causal, 20 heads x 64) and a long sequence (8192 tokens x 16 heads x 128, non-causal and causal).
FLOPs count the two matmuls of the forward (4 b h lq lk d) and 2.5x that for the backward, scaled by the
fraction of the score matrix the mask keeps (causal about a half). Times are medians after warm-up, waited
for on the device. On CPU only 'xla' runs (the Pallas kernels run there only in interpret mode).
"""
import argparse

import jax
import jax.numpy as jnp

from benchmarks import timing
from shardline.kernels.attention import api, reference

SHAPES = [
    # name, batch, length, heads, head_dim, mask, block_size
    ("vit22b-256", 16, 256, 48, 128, "none", None),
    ("vit-576", 8, 576, 48, 128, "none", None),
    ("vit-1024", 4, 1024, 48, 128, "none", None),
    ("mgdt-156", 64, 156, 20, 64, "block_causal", 39),
    ("long-8192", 1, 8192, 16, 128, "none", None),
    ("long-8192-causal", 1, 8192, 16, 128, "causal", None),
]


def kept_fraction(length: int, mask: str, block_size) -> float:
  """The share of the score matrix a mask keeps."""
  if mask == "none":
    return 1.0
  mask_matrix = reference.make_mask(length, length, mask, block_size)
  return float(jnp.mean(mask_matrix.astype(jnp.float32)))


def run(impls, dtype, iters, shapes, scale_batch):
  env = timing.environment()
  print(f"# {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, {jnp.dtype(dtype).name}")
  print("| shape | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | fwd+bwd vs cudnn | vs xla |")
  print("|---|---|---|---|---|---|---|---|")
  for name, b, l, h, d, mask, block in shapes:
    b = max(1, int(b * scale_batch))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = [jax.random.normal(key, (b, l, h, d), jnp.float32).astype(dtype) for key in keys]
    fwd_flops = 4 * b * h * l * l * d * kept_fraction(l, mask, block)
    results = {}
    for impl in impls:
      if impl == "cudnn" and mask == "block_causal":
        continue
      attend = lambda q, k, v, impl=impl: api.attention(q, k, v, mask_kind=mask, block_size=block,
                                                        implementation=impl)
      fwd = jax.jit(attend)
      train = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))
      try:
        t_fwd = timing.time_fn(fwd, q, k, v, iters=iters)["median"]
        t_all = timing.time_fn(train, q, k, v, iters=iters)["median"]
      except Exception as e:  # an implementation the backend lacks (cudnn off GPU) is reported, not fatal
        print(f"| {name} | {impl} | n/a: {type(e).__name__}: {str(e).splitlines()[0][:80]} |||||")
        continue
      results[impl] = t_all
      print(f"| {name} | {impl} | {1e3 * t_fwd:.3f} | {fwd_flops / t_fwd / 1e12:.1f} | {1e3 * t_all:.3f} | "
            f"{3.5 * fwd_flops / t_all / 1e12:.1f} | "
            f"{results['cudnn'] / t_all if 'cudnn' in results else float('nan'):.2f} | "
            f"{results['xla'] / t_all if 'xla' in results else float('nan'):.2f} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--impls", default=None, help="default: cudnn,xla,pallas on GPU; pallas,xla on TPU; xla on CPU")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--shapes", default=",".join(s[0] for s in SHAPES))
  parser.add_argument("--scale_batch", type=float, default=1.0, help="multiply every batch (e.g. 0.1 on CPU)")
  args = parser.parse_args()
  default = {"gpu": "cudnn,xla,pallas", "tpu": "pallas,xla"}.get(jax.default_backend(), "xla")
  wanted = args.shapes.split(",")
  run((args.impls or default).split(","), jnp.dtype(args.dtype), args.iters,
      [s for s in SHAPES if s[0] in wanted], args.scale_batch)


if __name__ == "__main__":
  main()
