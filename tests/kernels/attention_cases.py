"""Attention test cases shared by the interpret-mode tests and the native GPU tests: shapes and masks, random
inputs, the forward and dq/dk/dv comparison against the reference, and a tiny ViT-22B trained with each
implementation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from shardline.models.vit22b.classifier import ImageClassifier
from tests import helpers

# (batch, length, heads, head_dim, mask kind, block size, segment ids, block prefix)
CASES = [
    (2, 64, 2, 64, "none", None, False, None),
    (2, 37, 2, 64, "none", None, True, None),        # odd length, padding mask
    (1, 100, 2, 128, "causal", None, False, None),
    (1, 156, 1, 128, "block_causal", 39, False, 36),  # MGDT: 4 timesteps x (36 patches + 3 causal tokens)
    (1, 50, 1, 256, "causal", None, True, None),
    (1, 24, 2, 64, "block_causal", 6, True, None),   # whole blocks visible
]


def inputs(b, l, h, d, dtype, seg):
  """q, k, v, an output cotangent and (when `seg`) segment ids with padding, drawn from a seed of the shape."""
  keys = jax.random.split(jax.random.PRNGKey(l * d), 4)
  q, k, v, do = [jax.random.normal(key, (b, l, h, d), jnp.float32).astype(dtype) for key in keys]
  segments = None
  if seg:  # two sequences packed per row, the second one shorter, and padding (id 0) at the end
    pos = jnp.arange(l)[None].repeat(b, 0)
    segments = jnp.where(pos < l // 2, 1, jnp.where(pos < l - 5, 2, 0)).astype(jnp.int32)
  return q, k, v, do, segments


def compare(fn, ref, q, k, v, do, dtype, scale=None):
  """Asserts that `fn` matches `ref` in value and in dq, dk, dv (the latter relative to their largest entry)."""
  out, vjp = jax.vjp(fn, q, k, v)
  ref_out, ref_vjp = jax.vjp(ref, q, k, v)
  tol = helpers.tolerance(dtype, scale=scale or (10 if dtype == jnp.float32 else 1))
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(out), f32(ref_out), **tol)
  for name, got, want in zip(("dq", "dk", "dv"), vjp(do), ref_vjp(do)):
    largest = max(float(jnp.max(jnp.abs(want.astype(jnp.float32)))), 1.0)
    np.testing.assert_allclose(f32(got) / largest, f32(want) / largest, **tol, err_msg=name)


def vit_losses(batch, steps: int, learning_rate: float, **vit_overrides) -> dict:
  """attention_impl -> the training losses of `steps` Adam steps of a tiny ViT-22B, for 'xla' and 'pallas'."""
  losses = {}
  for impl in ("xla", "pallas"):
    model = ImageClassifier(helpers.tiny_vit(attention_impl=impl, head="gap", **vit_overrides))
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), batch))
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt, model=model, tx=tx):
      loss, grads = jax.value_and_grad(lambda p: model.loss_and_metrics(p, batch, None)[0])(params)
      updates, opt = tx.update(grads, opt, params)
      return optax.apply_updates(params, updates), opt, loss

    opt, run = tx.init(params), []
    for _ in range(steps):
      params, opt, loss = step(params, opt)
      run.append(float(loss))
    losses[impl] = run
  return losses
