"""LIMoE: the router (capacity, BPR), the MoE layer against a per-token reference, the auxiliary losses on
hand-computed inputs, expert-parallel parity, short training runs with and without the LIMoE losses, the byte
tokenizer, and the H/14 parameter counts."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

from shardline.models.limoe import losses, router, text
from shardline.models.limoe.config import LIMoEConfig
from shardline.models.limoe.contrastive import ContrastiveLIMoE
from shardline.models.limoe.moe import MoeMlp
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner
from shardline.core.errors import UserError
from shardline.tasks import digits, digits_captions
from tests import helpers


def tiny_limoe(**overrides) -> LIMoEConfig:
  base = dict(image_size=8, channels=1, patch_size=2, text_length=16, width=32, depth=2, mlp_dim=64, num_heads=2,
              head_dim=16, embed_dim=32, num_experts=4, moe_layers=(1,), router_noise_std=0.0)
  base.update(overrides)
  return LIMoEConfig(**base)


# ---------------------------------------------------------------------------------------------------- router
@pytest.mark.parametrize("capacity_factor, top_k, bpr", [(0.5, 1, True), (1.0, 1, False), (1.0, 2, True),
                                                         (2.0, 2, False)])
def test_capacity_is_never_exceeded_and_slots_are_unique(capacity_factor, top_k, bpr):
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 40, 4)) * 3
  valid = jnp.arange(40)[None].repeat(3, 0) < jnp.array([[40], [33], [10]])
  r = router.route(logits, top_k=top_k, capacity_factor=capacity_factor, batch_priority=bpr, valid=valid)
  cap = router.capacity(40, 4, capacity_factor, top_k)
  assert r.capacity == cap and int(r.counts.max()) <= cap
  expert, slot = np.asarray(r.expert), np.asarray(r.slot)
  for g in range(3):
    taken = [(expert[g, s, j], slot[g, s, j]) for s in range(40) for j in range(top_k) if slot[g, s, j] >= 0]
    assert len(taken) == len(set(taken)) == int(r.counts[g].sum())  # no slot given twice
    assert all(0 <= sl < cap for _, sl in taken)
    assert not np.any(slot[g][~np.asarray(valid[g])] >= 0)  # padding takes no slot
  assert np.all((np.asarray(r.gate) > 0) == (slot >= 0))


def test_batch_priority_routing_drops_the_least_confident_tokens_first():
  # Four tokens all prefer expert 0; capacity ceil(1.0 x 4 / 2) = 2. Confidence order: t2 > t0 > t3 > t1.
  confidence = jnp.array([2.0, 0.5, 4.0, 1.0])
  logits = jnp.stack([confidence, jnp.zeros(4)], axis=-1)[None]  # [1, 4, 2]
  bpr = router.route(logits, top_k=1, capacity_factor=1.0, batch_priority=True)
  assert np.asarray(bpr.kept[0]).tolist() == [True, False, True, False]
  assert np.asarray(bpr.slot[0, :, 0]).tolist() == [1, -1, 0, -1]  # the most confident token fills slot 0
  in_order = router.route(logits, top_k=1, capacity_factor=1.0, batch_priority=False)
  assert np.asarray(in_order.kept[0]).tolist() == [True, True, False, False]  # without BPR: first come
  # A dropped token's gate is zero, so the MoE layer adds nothing and the residual carries it.
  assert np.asarray(bpr.gate[0, :, 0] > 0).tolist() == [True, False, True, False]


def _per_token_reference(params, x, top_k):
  """Each token through its top-k experts, weighted by their router probabilities, one token at a time."""
  p = {k: np.asarray(v, np.float64) for k, v in params["params"].items()}
  gelu = lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))  # flax's tanh form
  x = np.asarray(x, np.float64)
  out = np.zeros_like(x)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      logits = x[b, t] @ p["router"]
      probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      for e in np.argsort(-probs)[:top_k]:
        out[b, t] += probs[e] * (gelu(x[b, t] @ p["wi"][e] + p["bi"][e]) @ p["wo"][e] + p["bo"][e])
  return out


@pytest.mark.full
@pytest.mark.parametrize("dispatch, grouped_impl, top_k", [("einsum", "xla", 1), ("grouped", "xla", 2),
                                                           ("grouped", "pallas", 1)])
def test_ample_capacity_drops_nothing_and_equals_the_per_token_reference(dispatch, grouped_impl, top_k):
  cfg = tiny_limoe(dispatch=dispatch, grouped_impl=grouped_impl, top_k=top_k, capacity_factor=4.0 / top_k,
                   width=128, mlp_dim=128)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, cfg.width))
  valid = jnp.ones((2, 8), bool)
  layer = MoeMlp(cfg)
  params = nn.unbox(layer.init(jax.random.PRNGKey(2), x, valid))
  # Spread the router so that tokens really choose different experts.
  params["params"]["router"] = params["params"]["router"] * 50
  y, stats = layer.apply(params, x, valid)
  assert float(stats["kept"].mean()) == 1.0
  assert len(set(np.asarray(stats["expert"]).tolist())) > 1
  np.testing.assert_allclose(y, _per_token_reference(params, x, top_k), rtol=1e-4, atol=1e-4)


@pytest.mark.full
def test_einsum_and_grouped_dispatch_agree_when_tokens_are_dropped():
  cfg = tiny_limoe(capacity_factor=0.5, width=128, mlp_dim=128)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, cfg.width))
  valid = jnp.ones((2, 16), bool)
  params = nn.unbox(MoeMlp(cfg).init(jax.random.PRNGKey(4), x, valid))
  outs = {}
  for dispatch, impl in (("einsum", "xla"), ("grouped", "xla"), ("grouped", "pallas")):
    outs[(dispatch, impl)], stats = MoeMlp(tiny_limoe(capacity_factor=0.5, width=128, mlp_dim=128,
                                                      dispatch=dispatch, grouped_impl=impl)).apply(params, x, valid)
    assert float(stats["kept"].mean()) < 1.0  # some tokens really were dropped
  for out in outs.values():
    np.testing.assert_allclose(out, outs[("einsum", "xla")], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- auxiliary losses
def test_auxiliary_losses_on_hand_computed_inputs():
  probs = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
  valid = jnp.array([1.0, 1.0, 1.0, 0.0])  # the last token is padding
  # Importance [2, 1]: variance 0.25, mean 1.5 -> CV^2 = 1/9.
  np.testing.assert_allclose(losses.importance_loss(probs, valid), 1 / 9, rtol=1e-6)
  # One-hot rows have zero entropy; a uniform row over 2 experts has log 2.
  np.testing.assert_allclose(losses.local_entropy_loss(probs, valid), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.local_entropy_loss(probs, 1 - valid), math.log(2), rtol=1e-6)
  # Mean distribution [2/3, 1/3]: H = 0.6365 nats; against threshold log 2 the loss is log 2 - H.
  h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
  np.testing.assert_allclose(losses.global_entropy_loss(probs, valid, math.log(2)), math.log(2) - h, rtol=1e-5)
  np.testing.assert_allclose(losses.global_entropy_loss(probs, valid, 0.5), 0.0)  # above the threshold: 0
  np.testing.assert_allclose(losses.z_loss(jnp.zeros((4, 2)), valid), math.log(2) ** 2, rtol=1e-6)
  # Load loss: no router noise -> 0; with noise, equal logits give equal loads -> 0, skewed logits do not.
  logits = jnp.array([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
  assert float(losses.load_loss(logits, logits, jnp.ones(3), 1, 0.0)) == 0.0
  assert float(losses.load_loss(jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.ones(3), 1, 1.0)) == 0.0
  # P(expert 0 chosen) = Phi(3) = 0.99865 per token, P(expert 1) = Phi(-3): loads [2.99595, 0.00405].
  loads = np.array([3 * 0.9986501, 3 * 0.0013499])
  np.testing.assert_allclose(losses.load_loss(logits, logits, jnp.ones(3), 1, 1.0),
                             loads.var() / loads.mean() ** 2, rtol=1e-4)


def test_contrastive_loss_is_symmetric_infonce():
  emb = jnp.eye(3)
  loss, accuracy = losses.contrastive_loss(emb, emb, jnp.log(2.0))
  # Each row and each column: softmax over [2, 0, 0] at the diagonal.
  np.testing.assert_allclose(loss, -math.log(math.exp(2) / (math.exp(2) + 2)), rtol=1e-6)
  assert float(accuracy) == 1.0
  swapped, _ = losses.contrastive_loss(emb, emb[::-1], jnp.log(2.0))
  assert float(swapped) > float(loss)


# --------------------------------------------------------------------------------------- parity and training
BATCH = 16


def _batches(steps):
  data = digits.load_split("train")
  captions = text.encode_all(digits_captions.captions("train"), 16)
  return [{"image": data["image"][i * BATCH:(i + 1) * BATCH], "text": captions[i * BATCH:(i + 1) * BATCH]}
          for i in range(steps)]


@functools.lru_cache(maxsize=None)
def _train(data: int, expert: int, dispatch: str = "einsum", aux: bool = True, steps: int = 3):
  """Losses and aux-loss metrics of `steps` adam steps of LIMoE tiny on a data x expert mesh."""
  model = ContrastiveLIMoE(tiny_limoe(dispatch=dispatch, grouped_impl="xla"), class_names=digits_captions.WORDS,
                           aux=losses.aux_weights(local_entropy=0.01 * aux, global_entropy=0.01 * aux,
                                                  importance=0.005 * aux, load=0.005 * aux))
  partitioner = Partitioner(helpers.mesh(data=data, expert=expert), rules.rule_set("expert"))
  tx = optax.adam(1e-3)
  setup = helpers.sharded_training(model, partitioner, tx, BATCH, 1e-3)
  state = setup.state
  history = []
  for batch in _batches(steps):
    state, metrics = setup.train(state, jax.device_put(batch, setup.batch_sharding))
    history.append({k: float(v[0]) / max(float(v[1]), 1e-9) if k != "loss" else float(v[0])
                    for k, v in jax.device_get(metrics).items()})
  return history


@pytest.mark.full
@pytest.mark.parametrize("data, expert, dispatch", [(4, 2, "einsum"), (2, 4, "einsum"), (2, 4, "grouped")])
def test_expert_parallel_parity(data, expert, dispatch):
  reference = _train(8, 1)
  got = _train(data, expert, dispatch)
  for ref_step, step in zip(reference, got):
    np.testing.assert_allclose(step["loss"], ref_step["loss"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(step["routing_success_image"], ref_step["routing_success_image"], atol=1e-6)


@pytest.mark.full
def test_training_runs_with_and_without_the_limoe_losses():
  with_aux, without = _train(8, 1, aux=True), _train(8, 1, aux=False)
  for history in (with_aux, without):
    assert all(np.isfinite(step["loss"]) for step in history)
  # The auxiliary gradients change the parameters: the later contrastive losses differ.
  assert abs(with_aux[-1]["contrastive_loss"] - without[-1]["contrastive_loss"]) > 1e-6
  # The totals differ by exactly the weighted auxiliary losses at the first step (same parameters there).
  first = with_aux[0]
  aux_total = sum(weight * (first[f"{name}_image"] + first[f"{name}_text"]) for name, weight in
                  (("importance", 0.005), ("load", 0.005), ("local_entropy", 0.01), ("global_entropy", 0.01)))
  np.testing.assert_allclose(first["loss"] - without[0]["loss"], aux_total, rtol=1e-3, atol=1e-6)
  assert aux_total > 0


# ------------------------------------------------------------------------------------- text, config, counts
def test_byte_tokenizer_matches_seqio_byte_vocabulary():
  vocabulary = seqio.ByteVocabulary()
  for caption in ("a photo of the digit seven", "handwritten 7", "naïve café"):
    ids = text.encode(caption, 40)
    expected = vocabulary.encode(caption) + [vocabulary.eos_id]
    assert ids.tolist() == expected + [vocabulary.pad_id] * (40 - len(expected))
  assert text.VOCAB_SIZE == vocabulary.vocab_size
  assert text.encode("x" * 100, 8).tolist()[-1] == text.EOS  # cut, still ended


def test_default_moe_layers_are_every_other_block_of_the_second_half():
  assert LIMoEConfig(depth=12).moe_layer_set == (7, 9, 11)
  assert LIMoEConfig(depth=12, dense=True).moe_layer_set == ()
  with pytest.raises(UserError, match="capacity_factor=0"):
    LIMoEConfig(capacity_factor=0)


@pytest.mark.full
def test_h14_has_5_6b_parameters_and_675m_per_token():
  from shardline.launch import gin_config  # pylint: disable=g-import-not-at-top
  gin_config.parse(["models/limoe/h14.gin"], ["IMAGE_SIZE = 224", "CHANNELS = 3", "TEXT_LENGTH = 16",
                                              "limoe.ContrastiveLIMoE.class_names = ['x']"])
  model = ContrastiveLIMoE()  # bound by the gin file
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(1)))
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  cfg = model.config
  expert_params = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(shapes)
                      if len(path) > 1 and getattr(path[-2], "key", None) == "moe")
  per_token = total - expert_params * (cfg.num_experts - cfg.top_k) // cfg.num_experts
  assert abs(total / 5.6e9 - 1) < 0.02, total
  assert abs(per_token / 675e6 - 1) < 0.02, per_token
