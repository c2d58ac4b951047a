"""ViT-22B ablations, one run each, reported as ratios of step time against the paper's architecture.

  python -m benchmarks.ablations --gin_file=experiments/vit22b_slice_h100.gin [--steps 20]

Variants: the sequential block instead of the parallel one (the paper reports parallel layers 15% faster), QKV
and LayerNorm biases added (the paper reports +3% utilisation without them), and QK-norm removed.
"""
import argparse
import gc
import sys
from typing import Sequence

import jax

from benchmarks import timing, train_step
from shardline.launch import flags
from shardline.launch import gin_config
from shardline.launch import runtime
from shardline.launch import plan_inputs

VARIANTS = {
    "paper (parallel, no QKV/LN biases, QK-norm)": [],
    "sequential block": ["vit22b.ViT22BConfig.parallel_block = False"],
    "with QKV and LayerNorm biases": ["vit22b.ViT22BConfig.qkv_bias = True",
                                      "vit22b.ViT22BConfig.layernorm_bias = True"],
    "without QK-norm": ["vit22b.ViT22BConfig.qk_norm = False"],
}


def main(argv: Sequence[str] = None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  flags.add_gin_flags(parser)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args, overrides = flags.parse_args(parser, list(sys.argv[1:] if argv is None else argv))
  base = None
  for n, (name, bindings) in enumerate(VARIANTS.items()):
    gin_config.parse(args.gin_file, list(args.gin_bindings) + list(overrides) + bindings,
                     allow_missing=plan_inputs.PLAN_NEEDS_NO, allow_missing_data_libraries=True)
    if n == 0:
      runtime.configure()  # before the first computation; the devices cannot change afterwards
      env = timing.environment()
      print(f"# ablations: {env['device']} ({env['backend']}), jax {env['jax']}, {env['date']}, {args.gin_file}")
      print("| variant | ms/step | ratio to paper | MFU |")
      print("|---|---|---|---|")
    model, batch_size = plan_inputs.plan_run()[:2]
    result = train_step.measure(model, batch_size, args.steps, args.warmup)
    base = base or result["step_seconds"]
    mfu = "n/a" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    print(f"| {name} | {1e3 * result['step_seconds']:.1f} | {result['step_seconds'] / base:.3f} | {mfu} |",
          flush=True)
    jax.clear_caches()
    gc.collect()


if __name__ == "__main__":
  main()
