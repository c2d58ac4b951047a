"""MetNet-2: CRPS from bins against numerical integration, the receptive field by gradients, spatial-sharding
parity (forward and gradients), the baselines, a few training steps, and the paper-scale configuration."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shardline.models.metnet2 import baselines, bins
from shardline.models.metnet2.config import MetNet2Config
from shardline.models.metnet2.forecaster import PrecipitationForecaster
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from shardline.tasks.precipitation import simulator
from shardline.training.state import step as step_lib
from tests import helpers


def tiny_metnet(**overrides) -> MetNet2Config:
  base = dict(context=32, target=16, input_frames=2, lead_times=(1, 3), width=8, downsample=2, max_dilation=4,
              repeats=1, num_bins=16, bin_width=0.5)
  base.update(overrides)
  return MetNet2Config(**base)


# ----------------------------------------------------------------------------------------------------- CRPS
def _numerical_crps(probs, observed, bin_width):
  """Integrates (F(x) - 1[x >= y])^2 on a fine grid: F = p_0 on the first bin (its mass at 0), then piecewise
  linear through the bin edges."""
  edges = np.arange(len(probs) + 1) * bin_width
  x = np.linspace(0, edges[-1], 200001)
  cdf = np.interp(x, edges, np.concatenate([[probs[0]], np.cumsum(probs)]))
  return np.trapezoid((cdf - (x >= min(observed, edges[-1]))) ** 2, x)


@pytest.mark.parametrize("probs, observed", [
    ([1.0, 0, 0, 0], 0.0),          # certain of no rain, none observed: CRPS 0
    ([1.0, 0, 0, 0], 0.3),          # certain of no rain, some observed
    ([0, 0, 1.0, 0], 0.7),
    ([0.25, 0.25, 0.25, 0.25], 1.3),
    ([0.1, 0.6, 0.2, 0.1], 5.0),     # observed above the top edge
    ([0.5, 0, 0, 0.5], 1.0),
])
def test_crps_from_bins_matches_numerical_integration(probs, observed):
  got = float(bins.crps(jnp.array(probs), jnp.array(observed), 0.5))
  np.testing.assert_allclose(got, _numerical_crps(np.array(probs), observed, 0.5), rtol=1e-4, atol=1e-6)


def test_point_forecast_crps_and_exceedance():
  assert float(bins.point_crps(jnp.array(3.0), jnp.array(1.0), 16, 0.5)) == 2.0
  probs = jnp.array([0.1, 0.2, 0.3, 0.4])
  np.testing.assert_allclose(bins.exceedance(probs, 1.0, 0.5), 0.7)  # bins from 1.0 mm/h up
  np.testing.assert_array_equal(bins.to_bins(jnp.array([0.0, 0.49, 0.5, 99.0]), 4, 0.5), [0, 0, 1, 3])


# ---------------------------------------------------------------------------------------- receptive field
@pytest.mark.full
@pytest.mark.parametrize("max_dilation, repeats", [(2, 1), (4, 1)])
def test_receptive_field_by_gradient(max_dilation, repeats):
  cfg = tiny_metnet(context=64, target=64, max_dilation=max_dilation, repeats=repeats)
  model = PrecipitationForecaster(cfg)
  batch = {k: jnp.ones(v.shape, v.dtype) for k, v in model.batch_spec(1).items()}
  params = model.init(jax.random.PRNGKey(0), batch)
  params = jax.tree.map(lambda p: p + 0.01, nn.unbox(params))  # no exactly-zero (FiLM) weights

  def centre_pixel(radar):
    logits = model.logits(params, {**batch, "radar": radar}, jnp.zeros((1,), jnp.int32))
    return logits[0, 32, 32, 0]
  grad = np.abs(np.asarray(jax.grad(centre_pixel)(batch["radar"] * 0.5)))[0].sum(0)  # [h, w]
  rows, cols = np.nonzero(grad.sum(1) > 0)[0], np.nonzero(grad.sum(0) > 0)[0]
  extent = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
  # The stack sees exactly the window it claims, up to the alignment of the space-to-depth cells.
  assert cfg.receptive_field - cfg.downsample <= extent[0] <= cfg.receptive_field, (extent, cfg.receptive_field)
  assert extent[0] == extent[1]


def test_tiny_experiment_sees_its_whole_context():
  cfg = MetNet2Config(context=64, target=32, width=32, max_dilation=8, repeats=2)
  assert cfg.dilations == (1, 2, 4, 8, 1, 2, 4, 8)
  farthest = cfg.context - (cfg.context - cfg.target) // 2 - 1  # from a target corner to the far context edge
  assert (cfg.receptive_field - 1) // 2 >= farthest  # every target pixel sees the whole context


# --------------------------------------------------------------------------------------- spatial parity
BATCH = 8


def _batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  c, t = cfg.context, cfg.target
  return {"radar": rng.gamma(0.5, 2.0, (BATCH, cfg.input_frames, c, c)).astype(np.float32),
          "state": rng.normal(size=(BATCH, cfg.state_channels, c, c)).astype(np.float32),
          "target": rng.gamma(0.5, 2.0, (BATCH, len(cfg.lead_times), t, t)).astype(np.float32)}


def _forward_and_grads(data, fsdp, tensor):
  cfg = tiny_metnet()
  model = PrecipitationForecaster(cfg)
  partitioner = Partitioner(helpers.mesh(data=data, fsdp=fsdp, tensor=tensor), rules.rule_set("spatial"))
  tx = optax.adam(1e-3)
  setup = helpers.sharded_training(model, partitioner, tx, BATCH, 1e-3)
  state, sharding, batch_sharding = setup.state, setup.sharding, setup.batch_sharding
  batch = jax.device_put(_batch(cfg), batch_sharding)
  rng = jax.random.PRNGKey(3)
  fn = step_lib.PartitionedFunction(
      jax.value_and_grad(lambda p, b: model.loss_and_metrics(p, b, rng)[0]), partitioner,
      in_shardings=(sharding.params, batch_sharding), out_shardings=(None, sharding.params))
  logits = step_lib.PartitionedFunction(lambda p, b: model.logits(p, b, jnp.array([0, 1] * (BATCH // 2))),
                                        partitioner, in_shardings=(sharding.params, batch_sharding),
                                        out_shardings=None)
  (loss, grads), out = fn(state.params, batch), logits(state.params, batch)
  return float(loss), jax.device_get(grads), np.asarray(out)


@pytest.mark.full
@pytest.mark.parametrize("fsdp, tensor", [(2, 4), (8, 1)])
def test_spatial_sharding_parity(fsdp, tensor):
  ref_loss, ref_grads, ref_out = _forward_and_grads(1, 1, 1)
  loss, grads, out = _forward_and_grads(1, fsdp, tensor)
  np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), grads, ref_grads)


def test_training_steps_reduce_the_loss():
  cfg = tiny_metnet()
  model = PrecipitationForecaster(cfg)
  partitioner = Partitioner(helpers.mesh(data=2, fsdp=2, tensor=2), rules.rule_set("spatial"))
  tx = optax.adam(3e-3)
  setup = helpers.sharded_training(model, partitioner, tx, BATCH, 3e-3)
  state = setup.state
  batch = jax.device_put(_batch(cfg), setup.batch_sharding)
  losses = []
  for _ in range(5):
    state, metrics = setup.train(state, batch)
    losses.append(float(metrics["loss"][0]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  eval_metrics = jax.jit(model.eval_metrics)(state.params, batch)
  assert {"crps/10min/metnet2", "crps/30min/advection", "csi1/10min/persistence",
          "brier2/30min/climatology"} <= set(eval_metrics)


# ---------------------------------------------------------------------------------------------- baselines
@pytest.mark.full
def test_advection_baseline_recovers_a_known_motion():
  rng = np.random.default_rng(0)
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  field = ndimage.gaussian_filter(rng.random((48, 48)), 3) * 20
  frames = np.stack([ndimage.shift(field, (1.0 * k, -2.0 * k), order=1, mode="grid-wrap") for k in range(5)])
  velocity = np.asarray(baselines.motion(jnp.asarray(frames[None, :4])))[0]
  np.testing.assert_allclose(velocity, [1.0, -2.0], atol=0.15)
  forecast = np.asarray(baselines.advection(jnp.asarray(frames[None, :4]), 1, 16))[0]
  truth = frames[4, 16:32, 16:32]
  assert np.abs(forecast - truth).mean() < 0.2 * np.abs(frames[3, 16:32, 16:32] - truth).mean()
  np.testing.assert_allclose(baselines.persistence(jnp.asarray(frames[None, :4]), 16)[0],
                             frames[3, 16:32, 16:32], rtol=1e-6)


def test_climatology_is_the_context_histogram():
  radar = jnp.array([[[[0.0, 0.6], [1.2, 9.0]]]])  # one example, one frame, 2 x 2
  np.testing.assert_allclose(baselines.climatology(radar, 4, 0.5)[0], [0.25, 0.25, 0.25, 0.25])


# --------------------------------------------------------------------------------------------- configurations
def test_bad_configurations_are_refused():
  with pytest.raises(UserError, match="downsample=2 must divide context=63"):
    MetNet2Config(context=63)
  with pytest.raises(UserError, match="power of two"):
    MetNet2Config(max_dilation=6)


def test_paper_scale_configuration_by_eval_shape():
  from shardline.launch import gin_config  # pylint: disable=g-import-not-at-top
  gin_config.parse(["models/metnet2/paper.gin"])
  model = PrecipitationForecaster()
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(1)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  cfg = model.config
  assert cfg.context == 2048 and cfg.target == 512 and cfg.receptive_field >= cfg.context
  # 16 blocks of a 3x3 dilated conv and a 1x1 projection at 384 channels dominate: 16 x 10 x 384^2 = 23.6M.
  assert 20e6 < count < 40e6, count
  out = jax.eval_shape(lambda p, b: model.logits(p, b, jnp.zeros((1,), jnp.int32)), shapes, model.batch_spec(1))
  assert out.shape == (1, 512, 512, 512)


@pytest.mark.parametrize("factor", [2, 4])
def test_bilinear_upsampling_matches_jax_image_resize(factor):
  from shardline.models.metnet2 import model as model_lib  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 3))
  want = jax.image.resize(x, (2, 5 * factor, 7 * factor, 3), "linear", antialias=False)
  np.testing.assert_allclose(model_lib.bilinear_upsample(x, factor), want, atol=1e-6)



def test_block_ratio_tells_a_blocky_field_from_a_smooth_one():
  from shardline.models.metnet2 import report  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  ramp = np.add.outer(np.arange(16.0), 0.5 * np.arange(16.0))[None]  # smooth: the same step everywhere
  blocky = np.repeat(np.repeat(rng.random((1, 8, 8)), 2, axis=1), 2, axis=2) + 0.01 * rng.random((1, 16, 16))
  assert abs(report.block_ratio(ramp, 2) - 1) < 1e-6
  assert report.block_ratio(blocky, 2) > 5
