"""MoE layer benchmark: LIMoE's MoE MLP with every grouped-matmul implementation and with one-hot (einsum)
dispatch, at several expert counts, against a dense MLP with the same FLOPs per token, in one run on one device.

  python -m benchmarks.moe_layer [--experts 8,32,64] [--impls pallas,ragged,xla] [--tokens 16384] [--width 768]
                                 [--mlp_dim 3072] [--group_size 2048] [--dtype bfloat16] [--iters 10]

Each row times one training step of the layer alone (forward and gradients of the input and every weight), as
a median after warm-up, waited for on the device. Useful FLOPs are the expert MLPs' matmuls for the tokens
routed: 6 x 2 x width x mlp_dim x top_k per token (forward and backward), the same count as the dense MLP of
width top_k x mlp_dim; routing, dispatch and capacity slack are overhead, not useful work. The rows:
  * one-hot einsum: GShard's dispatch and combine einsums around einsum expert MLPs;
  * grouped <impl>: tokens scattered into capacity buffers by index and gathered back, the expert MLPs as the
    grouped matmul in each implementation of kernels/moe/api.py ('pallas': the Pallas kernel; 'ragged':
    jax.lax.ragged_dot over the packed filled rows; 'xla': an einsum over every capacity slot);
  * grouped dispatch only: the same layer with its two grouped matmuls replaced by an elementwise stand-in of
    the same output shape, so it times routing, the scatter into buffers, the gather back and the combine.
The columns: vs one-hot (speed relative to the einsum layer at the same expert count; goal >= 3x at 32 experts
on GPU), vs dense (useful TFLOP/s relative to the dense MLP's; goal >= 70% on GPU), and the share of the step
that the dispatch alone takes. The Pallas kernel runs on CPU only in interpret mode, so it is left out there
unless --impls names it. The last line names the fastest grouped implementation at each expert count: the
figure kernels/moe/api.AUTO is set from.
"""
import argparse
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import timing
from shardline.kernels.moe import api as moe_api
from shardline.models.common.mlp import Mlp
from shardline.models.limoe import moe
from shardline.models.limoe.config import LIMoEConfig


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


def _matmul_stand_in(lhs, rhs, counts, implementation):
  """[E, G, C, K], [E, K, N] -> [E, G, C, N] without a matmul: an outer product of one column and one row, so
  the output still depends on both inputs (XLA cannot drop the dispatch) and is written once, as a matmul's is."""
  del counts, implementation
  # [e, g, c, 1] x [e, 1, 1, n] -> [e, g, c, n]
  return lhs[..., :1] * rhs[:, None, :1, :]


def _dispatch_seconds(config, x, valid, dtype, iters):
  """The grouped layer's step with its expert matmuls replaced by `_matmul_stand_in`."""
  with mock.patch.object(moe.moe_api, "grouped_matmul", _matmul_stand_in):
    return _time(moe.MoeMlp(config, dtype=dtype), x, iters, valid)


def run(experts, tokens, width, mlp_dim, group_size, top_k, capacity_factor, dtype, impls, iters):
  """Prints the table (and the fastest grouped implementation per expert count); returns {row name: seconds}."""
  env = timing.environment()
  print(f"# {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, {jnp.dtype(dtype).name}; "
        f"{tokens} tokens, width {width}, expert MLP {mlp_dim}, top-{top_k}, capacity factor {capacity_factor}, "
        f"groups of {group_size}; grouped implementations {','.join(impls)}")
  x = jax.random.normal(jax.random.PRNGKey(1), (tokens // group_size, group_size, width), jnp.float32).astype(dtype)
  valid = jnp.ones(x.shape[:2], bool)
  useful_flops = 6 * 2 * width * mlp_dim * top_k * tokens
  dense_seconds = _time(Mlp(top_k * mlp_dim, dtype=dtype), x, iters)
  dense_tflops = useful_flops / dense_seconds / 1e12
  print("| layer | experts | step ms | useful TFLOP/s | vs one-hot | vs dense | dispatch share |")
  print("|---|---|---|---|---|---|---|")
  print(f"| dense MLP ({top_k * mlp_dim}) | - | {1e3 * dense_seconds:.2f} | {dense_tflops:.3g} | - | 1.00 | - |")
  measured, fastest = {"dense": dense_seconds}, {}
  for e in experts:
    config = lambda dispatch, impl="xla": LIMoEConfig(
        width=width, mlp_dim=mlp_dim, num_experts=e, top_k=top_k, capacity_factor=capacity_factor,
        group_size=group_size, dispatch=dispatch, grouped_impl=impl)
    einsum = _time(moe.MoeMlp(config("einsum"), dtype=dtype), x, iters, valid)
    dispatch = _dispatch_seconds(config("grouped"), x, valid, dtype, iters)
    print(f"| grouped dispatch only | {e} | {1e3 * dispatch:.2f} | - | - | - | - |")
    measured[f"one-hot einsum {e}"], measured[f"grouped dispatch only {e}"] = einsum, dispatch
    rows = [("one-hot einsum", einsum, "-")]
    for impl in impls:
      seconds = _time(moe.MoeMlp(config("grouped", impl), dtype=dtype), x, iters, valid)
      rows.append((f"grouped {impl}", seconds, f"{dispatch / seconds:.2f}"))
    for name, seconds, share in rows:
      tflops = useful_flops / seconds / 1e12
      print(f"| {name} | {e} | {1e3 * seconds:.2f} | {tflops:.3g} | {einsum / seconds:.2f} | "
            f"{tflops / dense_tflops:.2f} | {share} |", flush=True)
      measured[f"{name} {e}"] = seconds
    fastest[e] = min(impls, key=lambda impl: measured[f"grouped {impl} {e}"])
  print("# fastest grouped implementation by experts: "
        + ", ".join(f"{e}: {impl}" for e, impl in fastest.items()))
  return measured


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--experts", default="8,32,64")
  parser.add_argument("--impls", default=None,
                      help="grouped-matmul implementations to time; default pallas,ragged,xla on GPU and TPU, "
                           "ragged,xla on CPU (where the Pallas kernel only interprets)")
  parser.add_argument("--tokens", type=int, default=16384)
  parser.add_argument("--width", type=int, default=768)
  parser.add_argument("--mlp_dim", type=int, default=3072)
  parser.add_argument("--group_size", type=int, default=2048)
  parser.add_argument("--top_k", type=int, default=1)
  parser.add_argument("--capacity_factor", type=float, default=1.0)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args()
  if args.tokens % args.group_size:
    parser.error(f"--group_size {args.group_size} must divide --tokens {args.tokens}.")
  default = "pallas,ragged,xla" if jax.default_backend() in ("gpu", "tpu") else "ragged,xla"
  impls = (args.impls or default).split(",")
  choices = [i for i in moe_api.IMPLEMENTATIONS if i != "auto"]  # 'auto' is one of the others
  unknown = [i for i in impls if i not in choices]
  if unknown:
    parser.error(f"--impls {','.join(unknown)}: choose from {', '.join(choices)}.")
  run([int(e) for e in args.experts.split(",")], args.tokens, args.width, args.mlp_dim, args.group_size,
      args.top_k, args.capacity_factor, jnp.dtype(args.dtype), impls, args.iters)


if __name__ == "__main__":
  main()
