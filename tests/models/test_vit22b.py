"""ViT-22B: the paper's architecture facts, one block against a hand-written reference, and the 22B count."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shardline.models.vit22b.block import Block
from shardline.models.vit22b.classifier import ImageClassifier
from shardline.models.vit22b.config import ViT22BConfig
from shardline.core.errors import UserError
from tests import helpers

HEAD_PARAMS = ("map_head", "head_kernel", "head_bias")


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_params(config):
  model = ImageClassifier(config)
  return nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), model.batch_spec(1)))


def test_qk_norm_and_no_qkv_or_layernorm_biases():
  params = _abstract_params(helpers.tiny_vit())
  layer = params["encoder"]["layers"]
  assert set(layer["query_norm"]) == {"scale"} and set(layer["key_norm"]) == {"scale"}
  assert set(layer["norm"]) == {"scale"}  # one LayerNorm, no bias, feeds attention and MLP
  assert set(params["encoder_norm"]) == {"scale"}
  assert "qkv_bias" not in layer
  for name in ("query", "key", "value"):
    assert not isinstance(layer[name], dict)  # a bare kernel: no bias beside it
  assert {"attn_out_bias", "mlp_in_bias", "mlp_out_bias"} <= set(layer)  # biases elsewhere are kept


def test_sequential_block_has_two_norms():
  layer = _abstract_params(helpers.tiny_vit(parallel_block=False))["encoder"]["layers"]
  assert {"attn_norm", "mlp_norm"} <= set(layer) and "norm" not in layer


def _layernorm(x, scale, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale


def _reference_parallel_block(x, p):
  """y = x + Attn(LN(x)) + MLP(LN(x)), written out with numpy."""
  y = _layernorm(x, p["norm"]["scale"])
  q = np.einsum("ble,ehd->blhd", y, p["query"])
  k = np.einsum("ble,ehd->blhd", y, p["key"])
  v = np.einsum("ble,ehd->blhd", y, p["value"])
  q = _layernorm(q, p["query_norm"]["scale"])
  k = _layernorm(k, p["key_norm"]["scale"])
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  o = np.einsum("bhqk,bkhd->bqhd", probs, v)
  attn = np.einsum("blhd,hde->ble", o, p["attn_out"]) + p["attn_out_bias"]
  hidden = np.einsum("ble,em->blm", y, p["mlp_in"]) + p["mlp_in_bias"]
  gelu = np.asarray(jax.nn.gelu(jnp.asarray(hidden)))
  mlp = np.einsum("blm,me->ble", gelu, p["mlp_out"]) + p["mlp_out_bias"]
  return x + attn + mlp


@pytest.mark.full
def test_parallel_block_matches_reference():
  config = helpers.tiny_vit()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, config.width))
  block = Block(config)
  params = nn.unbox(block.init(jax.random.PRNGKey(2), x)["params"])
  # Random (non-trivial) norm scales and biases, so the reference checks every term.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  params = jax.tree.unflatten(treedef, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  out, _ = block.apply({"params": params}, x)
  expected = _reference_parallel_block(np.asarray(x, np.float64),
                                       jax.tree.map(lambda a: np.asarray(a, np.float64), params))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def test_vit22b_parameter_count_within_one_percent():
  params = _abstract_params(ViT22BConfig(num_classes=1000))
  encoder = {k: v for k, v in params.items() if k not in HEAD_PARAMS}
  count = _count(encoder)
  assert abs(count - 21.7e9) / 21.7e9 < 0.01, f"{count / 1e9:.3f}B"
  layer = params["encoder"]["layers"]
  assert layer["query"].shape == (48, 6144, 48, 128) and layer["mlp_in"].shape == (48, 6144, 24576)


@pytest.mark.parametrize("size, expected_millions", [("b16", 86), ("l16", 304)])
def test_standard_sizes(size, expected_millions):
  dims = {"b16": dict(patch_size=16, width=768, depth=12, mlp_dim=3072, num_heads=12, head_dim=64),
          "l16": dict(patch_size=16, width=1024, depth=24, mlp_dim=4096, num_heads=16, head_dim=64)}[size]
  params = _abstract_params(ViT22BConfig(num_classes=1000, head="gap", **dims))
  count = _count(params) / 1e6
  assert abs(count - expected_millions) / expected_millions < 0.02, count


def test_bad_config_is_a_user_error():
  with pytest.raises(UserError, match="head='cls' must be one of"):
    helpers.tiny_vit(head="cls")
  with pytest.raises(UserError, match="patch_size=3 must divide image_size=8"):
    helpers.tiny_vit(patch_size=3)
