"""FLOPs counted from compiled HLO: loops multiplied out, the analytic ViT formula, and the remat correction."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from shardline.kernels import kernel_names
from shardline.models.vit22b import flops as vit_flops
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training.planning import mfu as flops_lib
from shardline.training.planning.hlo import flops as hlo_flops
from tests import helpers

BATCH = 32


def _step_flops(config):
  model = ImageClassifier(config)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in model.batch_spec(BATCH).items()}
  params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  grad = jax.jit(jax.grad(lambda p, b: model.loss_and_metrics(p, b, None)[0]))
  compiled = grad.lower(params, batch).compile()
  return flops_lib.compiled_flops(compiled), compiled


def test_scanned_and_unrolled_layers_count_the_same_and_xla_does_not():
  scanned, compiled = _step_flops(helpers.tiny_vit(depth=4, scan_layers=True))
  unrolled, _ = _step_flops(helpers.tiny_vit(depth=4, scan_layers=False))
  assert scanned == unrolled
  xla = compiled.cost_analysis()["flops"]
  assert xla < 0.5 * scanned  # XLA's own cost analysis counts the scanned body once


@pytest.mark.parametrize("head", ["gap", "map"])
def test_count_matches_the_analytic_vit_formula(head):
  config = helpers.tiny_vit(depth=3, head=head)
  counted, _ = _step_flops(config)
  analytic = vit_flops.train_step_flops(config, BATCH)
  # The backward skips the gradient with respect to the input images (2n·p²c·e per image): well under 1%.
  assert abs(counted - analytic) / analytic < 0.02, (counted, analytic)


def test_remat_correction():
  plain, _ = _step_flops(helpers.tiny_vit(depth=3))
  remat, _ = _step_flops(helpers.tiny_vit(depth=3, remat_policy="full"))
  ratio = remat / plain
  # Full remat recomputes block forwards in the backward pass: at most 4/3 of a plain step's matmuls (measured
  # 1.20 here; XLA keeps some forward products). An MFU computed from a remat step's compiled FLOPs is therefore
  # hardware-FLOP utilisation, above model-FLOP utilisation by this factor; benchmarks report both.
  assert 1.05 < ratio <= 4 / 3 + 1e-6, ratio


def test_custom_call_cost_estimates_are_counted():
  text = ('ENTRY %m (x: f32[4]) -> f32[4] {\n  %x = f32[4]{0} parameter(0)\n'
          '  ROOT %k = f32[4]{0} custom-call(%x), custom_call_target="tpu_custom_call", '
          'backend_config={"custom_call_config": {"cost_estimate": {"flops": "1000"}}}\n}\n')
  assert hlo_flops.count(text) == 1000.0


@pytest.mark.parametrize("name, expected", [
    # x[1024, 768] @ w[768, 3072] and both gradients: 3 x 2 x 1024 x 768 x 3072, as cuBLAS calls
    ("h100_matmul_forward_backward.hlo", 6 * 1024 * 768 * 3072),
    # a 3x3 convolution, 32 -> 64 channels, over 8 x 64 x 64, and both gradients, as cuDNN calls
    ("h100_conv_forward_backward.hlo", 3 * 2 * 8 * 64 * 64 * 64 * 3 * 3 * 32),
])
def test_gpu_library_calls_are_counted(name, expected):
  """Modules compiled on an H100 (benchmarks.flops_check), where XLA turned the dots into cuBLAS calls and a
  Triton GEMM fusion, and every convolution into a cuDNN call."""
  with open(os.path.join(os.path.dirname(__file__), "data", name)) as f:
    text = f.read()
  assert "__cublas$" in text or ("__cudnn$conv" in text and " convolution(" not in text)
  assert hlo_flops.count(text) == expected


def test_triton_kernels_carry_their_flops_in_their_name():
  name = kernel_names.with_flops("attention_forward", 268435456)
  text = ('ENTRY %m (x: f32[4]) -> f32[4] {\n  %x = f32[4]{0} parameter(0)\n'
          '  ROOT %k = f32[4]{0} custom-call(%x), custom_call_target="__gpu$xla.gpu.triton", '
          f'backend_config={{debug = false, grid_x = 2 : i32, name = "{name}", num_warps = 8 : i32}}\n}}\n')
  assert hlo_flops.count(text) == 268435456.0
  assert hlo_flops.count(text.replace(name, "attention_forward")) == 0.0
