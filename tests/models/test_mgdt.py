"""MGDT: tokenisation round trips, the exact attention mask, the optimality bias, a few training steps, a short
game played in the emulator, and the 200M configuration."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shardline.models.mgdt import augment, sampling, tokens
from shardline.models.mgdt.agent import DecisionTransformerAgent
from shardline.models.mgdt.config import MGDTConfig
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from tests import helpers

TINY = dict(width=32, depth=2, num_heads=2, mlp_dim=64)


def test_patching_round_trips_and_is_row_major():
  frames = np.random.default_rng(0).integers(0, 255, (2, 3, 84, 84)).astype(np.uint8)
  patches = tokens.patchify(frames, 14)
  assert patches.shape == (2, 3, 36, 196)
  np.testing.assert_array_equal(patches[0, 0, 1], frames[0, 0, :14, 14:28].ravel())  # second patch: row 0, col 1
  np.testing.assert_array_equal(patches[0, 0, 6], frames[0, 0, 14:28, :14].ravel())  # seventh: row 1, col 0
  np.testing.assert_array_equal(tokens.unpatchify(patches, 14, 84), frames)
  np.testing.assert_array_equal(np.asarray(tokens.unpatchify(tokens.patchify(jnp.asarray(frames), 14), 14, 84)),
                                frames)


def test_return_binning_and_reward_clipping():
  returns = jnp.array([-30.0, -20.0, 0.0, 7.0, 99.0, 250.0])
  bins = tokens.return_to_bin(returns, -20, 100)
  np.testing.assert_array_equal(bins, [0, 0, 20, 27, 119, 119])
  np.testing.assert_array_equal(tokens.bin_to_return(bins[1:5], -20), [-20, 0, 7, 99])  # in range: exact
  np.testing.assert_array_equal(tokens.reward_to_token(jnp.array([-5.0, -1.0, 0.0, 0.5, 200.0])), [0, 0, 1, 2, 2])


def test_attention_mask_is_exactly_block_causal():
  k, n = 3, 36
  mask = tokens.attention_mask(k, n)
  per = n + 3
  for i in range(k * per):
    for j in range(k * per):
      ti, oi, tj, oj = i // per, i % per, j // per, j % per
      expected = tj < ti or (tj == ti and (oj < n or oj <= oi))
      assert mask[i, j] == expected, (i, j)
  # Read-outs cannot see what they predict: the return (at the last patch) not the return token, the action
  # (at the return token) not the action token, the reward (at the action token) not the reward token.
  assert not mask[n - 1, n] and not mask[n, n + 1] and not mask[n + 1, n + 2]
  assert mask[n + 2, :n + 3].all() and not mask[n + 2, per:].any()  # nothing of later timesteps


@pytest.mark.full
def test_model_predictions_do_not_see_their_targets():
  """Changing a timestep's action changes no action logit of that timestep or earlier (a leak test through the
  whole network, not just the mask)."""
  agent = DecisionTransformerAgent(MGDTConfig(**TINY))
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in agent.batch_spec(1).items()}
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        nn.unbox(agent.init(jax.random.PRNGKey(0), batch)))
  run = lambda b: agent.module.apply({"params": params}, *agent._inputs(b))  # pylint: disable=protected-access
  before = run(batch)
  after = run({**batch, "actions": batch["actions"].at[0, 2].set(5)})
  np.testing.assert_allclose(after["action_logits"][0, :3], before["action_logits"][0, :3], atol=1e-6)
  np.testing.assert_allclose(after["return_logits"][0, :3], before["return_logits"][0, :3], atol=1e-6)
  assert not np.allclose(after["reward_logits"][0, 2], before["reward_logits"][0, 2])  # the reward may see it
  assert not np.allclose(after["action_logits"][0, 3], before["action_logits"][0, 3])  # and later steps


def test_without_action_conditioning_no_output_depends_on_any_action():
  """condition_on_actions=False hides every action token: changing all actions changes no logit."""
  agent = DecisionTransformerAgent(MGDTConfig(**TINY, condition_on_actions=False))
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in agent.batch_spec(1).items()}
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        nn.unbox(agent.init(jax.random.PRNGKey(0), batch)))
  run = lambda b: agent.module.apply({"params": params}, *agent._inputs(b))  # pylint: disable=protected-access
  before = run(batch)
  after = run({**batch, "actions": jnp.array([[3, 7, 11, 17]], jnp.int32)})
  for name in ("return_logits", "action_logits", "reward_logits"):
    np.testing.assert_allclose(after[name], before[name], atol=1e-6)
  after_return = run({**batch, "returns_to_go": jnp.full((1, 4), 5.0)})
  assert not np.allclose(after_return["action_logits"], before["action_logits"])  # returns still condition
  # Checkpoints from before the option (no such key) restore at the default; hiding actions is a new model.
  assert "condition_on_actions" not in DecisionTransformerAgent(MGDTConfig(**TINY)).fingerprint()["config"]
  assert agent.fingerprint()["config"]["condition_on_actions"] is False


def test_optimality_bias_moves_mass_to_higher_returns():
  logits = jnp.log(jnp.array([0.1, 0.4, 0.4, 0.1]))
  unbiased = jax.nn.softmax(sampling.biased_return_logits(logits, 0.0, 0, 4))
  np.testing.assert_allclose(unbiased, [0.1, 0.4, 0.4, 0.1], rtol=1e-6)  # kappa = 0: unchanged
  values = jnp.arange(4.0)
  means = [float(jnp.sum(values * jax.nn.softmax(sampling.biased_return_logits(logits, kappa, 0, 4))))
           for kappa in (0.0, 2.0, 10.0)]
  assert means[0] < means[1] < means[2]
  biased = jax.nn.softmax(sampling.biased_return_logits(logits, 4.0, 0, 4))
  np.testing.assert_allclose(biased / unbiased, np.exp(4.0 * np.arange(4) / 4) / np.sum(
      np.exp(4.0 * np.arange(4) / 4) * unbiased), rtol=1e-5)  # exactly P(R) exp(kappa R_norm), renormalised


@pytest.mark.full
def test_the_return_support_limits_the_biased_draw_to_the_datas_returns():
  """With kappa large, unrestricted sampling lands on the top bins however unlikely the model thinks them (the
  failure the support fixes); with support [2, 5] no draw leaves it and the tilt favours its top."""
  logits = jnp.log(jnp.full((120,), 1e-5).at[20:30].set(0.1))  # the model: R in [0, 10), rest ~1e-5 each
  rngs = jax.random.split(jax.random.PRNGKey(0), 2000)
  free = jax.vmap(lambda r: sampling.sample_return(r, logits, 30.0, -20, 100))(rngs) - 20
  assert np.mean(np.asarray(free) >= 10) > 0.99
  held = np.asarray(jax.vmap(lambda r: sampling.sample_return(r, logits, 30.0, -20, 100,
                                                              support=jnp.array([2, 5])))(rngs)) - 20
  assert held.min() >= 2 and held.max() <= 5
  counts = np.bincount(held, minlength=6)[2:]
  assert counts[3] > 5 * counts[0]  # normalised over [2, 5]: exp(30) toward R = 5 over R = 2
  tilted = jax.nn.softmax(sampling.biased_return_logits(logits, 3.0, -20, 100, support=jnp.array([2, 5])))
  np.testing.assert_allclose(tilted[22:26], np.exp(np.arange(4.0)) / np.exp(np.arange(4.0)).sum(), rtol=1e-5)


@pytest.mark.full
def test_the_flash_kernel_computes_the_model_like_xla():
  """attention_impl='pallas' (the Triton kernel in interpret mode here) gives XLA's loss and gradients."""
  rng = np.random.default_rng(1)
  batch = {"observations": rng.integers(0, 255, (1, 4, 84, 84)).astype(np.uint8),
           "returns_to_go": rng.integers(-3, 10, (1, 4)).astype(np.float32),
           "actions": rng.integers(0, 18, (1, 4)).astype(np.int32),
           "rewards": rng.integers(-1, 2, (1, 4)).astype(np.int32)}
  results = {}
  for impl in ("xla", "pallas"):
    agent = DecisionTransformerAgent(MGDTConfig(**dict(TINY, depth=1), attention_impl=impl))
    params = nn.unbox(agent.init(jax.random.PRNGKey(0), batch))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    results[impl] = jax.value_and_grad(lambda p, agent=agent: agent.loss_and_metrics(p, batch, None)[0])(params)
  np.testing.assert_allclose(results["pallas"][0], results["xla"][0], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(results["pallas"][1]), jax.tree.leaves(results["xla"][1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_random_shift_moves_every_frame_of_a_window_by_one_offset():
  frames = jnp.asarray(np.random.default_rng(0).integers(0, 255, (16, 3, 12, 12)).astype(np.uint8))
  shifted = np.asarray(augment.random_shift(jax.random.PRNGKey(1), frames, 2))
  assert shifted.shape == frames.shape and shifted.dtype == np.uint8
  padded = np.pad(np.asarray(frames), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
  offsets = set()
  for b in range(16):  # the window must equal the padded window cropped at one offset, for all its frames
    found = [(i, j) for i in range(5) for j in range(5)
             if np.array_equal(padded[b, :, i:i + 12, j:j + 12], shifted[b])]
    assert len(found) == 1, (b, found)
    offsets.add(found[0])
  assert len(offsets) > 4  # windows get different offsets
  np.testing.assert_array_equal(augment.random_shift(jax.random.PRNGKey(1), frames, 0), frames)
  with pytest.raises(UserError, match="shift_pad=-1"):
    DecisionTransformerAgent(MGDTConfig(**TINY), shift_pad=-1)


def test_a_few_training_steps():
  agent = DecisionTransformerAgent(MGDTConfig(**TINY), shift_pad=4)
  partitioner = Partitioner(helpers.mesh(data=8), rules.rule_set("data"))
  tx = optax.adam(3e-3)
  setup = helpers.sharded_training(agent, partitioner, tx, 8, 3e-3)
  state = setup.state
  rng = np.random.default_rng(0)
  batch = {"observations": rng.integers(0, 255, (8, 4, 84, 84)).astype(np.uint8),
           "returns_to_go": rng.integers(-3, 10, (8, 4)).astype(np.float32),
           "actions": rng.integers(0, 18, (8, 4)).astype(np.int32),
           "rewards": rng.integers(-1, 2, (8, 4)).astype(np.int32)}
  batch = jax.device_put(batch, setup.batch_sharding)
  losses = []
  for _ in range(4):
    state, metrics = setup.train(state, batch)
    losses.append(float(metrics["loss"][0]))
  assert losses[-1] < losses[0] and np.isclose(losses[0], np.log(120) + np.log(18) + np.log(3), rtol=1e-3)


def test_plays_one_short_episode_in_the_emulator(tmp_path):
  from shardline.tasks.atari import generate  # pylint: disable=g-import-not-at-top
  from shardline.training.evaluation import atari_play as play  # pylint: disable=g-import-not-at-top
  agent = DecisionTransformerAgent(MGDTConfig(**TINY))
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in agent.batch_spec(1).items()}
  params = nn.unbox(agent.init(jax.random.PRNGKey(0), batch))
  decide = jax.jit(agent.decide)
  support = jnp.array([-21, 21])
  score, captured = play.play_episode(agent, params, decide, "Pong", seed=3, kappa=10.0, max_steps=12,
                                      capture_at=6, return_support=support)
  again, _ = play.play_episode(agent, params, decide, "Pong", seed=3, kappa=10.0, max_steps=12,
                               return_support=support)
  assert score == again  # deterministic for a seed
  frame, weights = captured
  assert frame.shape == (84, 84) and weights.shape == (36,) and np.all(weights >= 0)
  play.plot_attention({"Pong": captured}, 14, str(tmp_path / "attention.png"))
  assert (tmp_path / "attention.png").stat().st_size > 1000
  behaviour = {"Pong": {"behaviour": {"mean": -3.0, "best": 3.0}}}
  table = play._play_all(agent, params, decide, str(tmp_path / "play"), ["Pong"], 1, 12, behaviour, 3,  # pylint: disable=protected-access
                         compare_kappa_zero=True, return_support=(-21, 21))["results"]["Pong"]
  assert table["kappa=10"]["scores"] == [score] and len(table["kappa=0"]["scores"]) == 1
  assert table["return_support"] == [-21, 21]
  assert table["random_played"]["scores"] == [float(generate.play_episode("Pong", "random", 3, 12)["episode_return"])]
  assert (tmp_path / "play" / "mgdt_play.json").exists() and (tmp_path / "play" / "mgdt_attention.png").exists()
  assert play.human_normalised("Pong", play.HUMAN_SCORES["Pong"]) == pytest.approx(1.0)


def test_200m_configuration_by_eval_shape():
  from shardline.launch import gin_config  # pylint: disable=g-import-not-at-top
  gin_config.parse(["models/mgdt/200m.gin"])
  agent = DecisionTransformerAgent()
  shapes = nn.unbox(jax.eval_shape(agent.init, jax.random.PRNGKey(0), agent.batch_spec(1)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert abs(count / 200e6 - 1) < 0.03, count
