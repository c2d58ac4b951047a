"""FLOPs counted from compiled HLO: loops multiplied out, the analytic ViT formula, and the remat correction."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from shardline.models.vit22b import flops as vit_flops
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.training import flops as flops_lib
from shardline.training import hlo_flops
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
