"""MoE layer benchmark: LIMoE's MoE MLP with grouped-matmul dispatch against one-hot (einsum) dispatch at several
expert counts, and against a dense MLP with the same FLOPs per token, measured in one run on one device.

  python -m benchmarks.moe_layer [--experts 8,32,64] [--tokens 16384] [--width 768] [--mlp_dim 3072]
                                 [--group_size 2048] [--dtype bfloat16] [--iters 10]

Each row times one training step of the layer alone (forward and gradients of the input and every weight), as
a median after warm-up, waited for on the device. Useful FLOPs are the expert MLPs' matmuls for the tokens
routed: 6 x 2 x width x mlp_dim x top_k per token (forward and backward), the same count as the dense MLP of
width top_k x mlp_dim; routing, dispatch and capacity slack are overhead, not useful work. The columns:
  * vs one-hot: the grouped layer's speed relative to the einsum layer at the same expert count (goal >= 3x at
    32 experts on GPU);
  * vs dense: the layer's useful TFLOP/s relative to the dense MLP's (goal >= 70% on GPU).
The grouped layer runs the Pallas kernel on GPU and TPU and its XLA reference elsewhere (the kernel runs on
CPU only in interpret mode); --grouped_impl overrides that.
"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import timing
from shardline.models.common.mlp import Mlp
from shardline.models.limoe.config import LIMoEConfig
from shardline.models.limoe.moe import MoeMlp


def _step(module, x, *extra):
  """A jitted function of (params, x) returning the gradients of sum(output) w.r.t. both."""
  def loss(params, x):
    out = module.apply({"params": params}, x, *extra)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(out.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _time(module, x, iters, *extra):
  params = nn.unbox(module.init(jax.random.PRNGKey(0), x, *extra))["params"]
  return timing.time_fn(_step(module, x, *extra), params, x, iters=iters)["median"]


def run(experts, tokens, width, mlp_dim, group_size, top_k, capacity_factor, dtype, grouped_impl, iters):
  env = timing.environment()
  print(f"# {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, {jnp.dtype(dtype).name}; "
        f"{tokens} tokens, width {width}, expert MLP {mlp_dim}, top-{top_k}, capacity factor {capacity_factor}, "
        f"groups of {group_size}, grouped dispatch via '{grouped_impl}'")
  x = jax.random.normal(jax.random.PRNGKey(1), (tokens // group_size, group_size, width), jnp.float32).astype(dtype)
  valid = jnp.ones(x.shape[:2], bool)
  useful_flops = 6 * 2 * width * mlp_dim * top_k * tokens
  dense_seconds = _time(Mlp(top_k * mlp_dim, dtype=dtype), x, iters)
  dense_tflops = useful_flops / dense_seconds / 1e12
  print("| layer | experts | step ms | useful TFLOP/s | vs one-hot | vs dense |")
  print("|---|---|---|---|---|---|")
  print(f"| dense MLP ({top_k * mlp_dim}) | - | {1e3 * dense_seconds:.2f} | {dense_tflops:.3g} | - | 1.00 |")
  for e in experts:
    seconds = {}
    for dispatch in ("einsum", "grouped"):
      config = LIMoEConfig(width=width, mlp_dim=mlp_dim, num_experts=e, top_k=top_k,
                           capacity_factor=capacity_factor, group_size=group_size, dispatch=dispatch,
                           grouped_impl=grouped_impl)
      seconds[dispatch] = _time(MoeMlp(config, dtype=dtype), x, iters, valid)
      tflops = useful_flops / seconds[dispatch] / 1e12
      versus = f"{seconds['einsum'] / seconds[dispatch]:.2f}" if dispatch == "grouped" else "1.00"
      name = "grouped matmul" if dispatch == "grouped" else "one-hot einsum"
      print(f"| {name} | {e} | {1e3 * seconds[dispatch]:.2f} | {tflops:.3g} | {versus} | "
            f"{tflops / dense_tflops:.2f} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--experts", default="8,32,64")
  parser.add_argument("--tokens", type=int, default=16384)
  parser.add_argument("--width", type=int, default=768)
  parser.add_argument("--mlp_dim", type=int, default=3072)
  parser.add_argument("--group_size", type=int, default=2048)
  parser.add_argument("--top_k", type=int, default=1)
  parser.add_argument("--capacity_factor", type=float, default=1.0)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--grouped_impl", default=None, help="'pallas' or 'xla'; default pallas on GPU/TPU")
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args()
  if args.tokens % args.group_size:
    parser.error(f"--group_size {args.group_size} must divide --tokens {args.tokens}.")
  grouped_impl = args.grouped_impl or ("pallas" if jax.default_backend() in ("gpu", "tpu") else "xla")
  run([int(e) for e in args.experts.split(",")], args.tokens, args.width, args.mlp_dim, args.group_size,
      args.top_k, args.capacity_factor, jnp.dtype(args.dtype), grouped_impl, args.iters)


if __name__ == "__main__":
  main()
