"""Checks the compiled-HLO FLOP counter on the current backend against hand counts, and saves the HLO.

  python -m benchmarks.flops_check [--hlo_dir DIR]

On GPUs XLA turns dots into cuBLAS calls and convolutions into cuDNN calls; the counter must see through both.
Prints counted / analytic for a matmul, its gradients, a convolution and its gradients, and an attention
kernel (whose FLOPs come from its declared cost estimate).
"""
import argparse
import os

import jax
import jax.numpy as jnp

from shardline.kernels.attention import api as attention_api
from shardline.training.planning.hlo import flops as hlo_flops


def _with_gradients(fn):
  """fn's output and both input gradients for a data-dependent cotangent (a constant one would fold away)."""
  def both(a, b):
    out, vjp = jax.vjp(fn, a, b)
    return out, vjp(jnp.sin(out))
  return both


def _cases():
  m, k, n = 1024, 768, 3072
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (m, k), jnp.bfloat16)
  w = jax.random.normal(keys[1], (k, n), jnp.bfloat16)
  matmul = lambda x, w: x @ w
  img = jax.random.normal(keys[2], (8, 64, 64, 32), jnp.bfloat16)  # NHWC
  ker = jax.random.normal(keys[3], (3, 3, 32, 64), jnp.bfloat16)  # HWIO
  conv = lambda i, f: jax.lax.conv_general_dilated(i, f, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  conv_fwd = 2 * 8 * 64 * 64 * 64 * 3 * 3 * 32
  q = jax.random.normal(keys[0], (2, 256, 4, 128), jnp.bfloat16)
  attend = lambda q, k, v: jnp.sum(attention_api.attention(q, k, v, implementation="pallas").astype(jnp.float32))
  return [
      ("matmul forward", jax.jit(matmul), (x, w), 2 * m * k * n),
      ("matmul forward+backward", jax.jit(_with_gradients(matmul)), (x, w), 6 * m * k * n),
      ("conv forward", jax.jit(conv), (img, ker), conv_fwd),
      ("conv forward+backward", jax.jit(_with_gradients(conv)), (img, ker), 3 * conv_fwd),
      ("pallas attention forward", jax.jit(attend), (q, q, q), 4 * 2 * 4 * 256 * 256 * 128),
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hlo_dir", default=None, help="write each compiled module's text here")
  args = parser.parse_args()
  print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print("| program | counted GFLOP | analytic GFLOP | ratio |\n|---|---|---|---|")
  for name, fn, inputs, analytic in _cases():
    text = fn.lower(*inputs).compile().as_text()
    counted = hlo_flops.count(text)
    print(f"| {name} | {counted / 1e9:.3f} | {analytic / 1e9:.3f} | {counted / analytic:.3f} |")
    if args.hlo_dir:
      os.makedirs(args.hlo_dir, exist_ok=True)
      with open(os.path.join(args.hlo_dir, name.replace(" ", "_").replace("+", "_") + ".hlo"), "w") as f:
        f.write(text)


if __name__ == "__main__":
  main()
