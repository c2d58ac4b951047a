"""The Pallas kernels compiled natively for a GPU (Triton), and ragged_dot, against the XLA reference; skipped
without a GPU.

Run on a GPU machine with `JAX_PLATFORMS=cuda python -m pytest tests/kernels/test_gpu_native.py`. float32
matmuls on GPUs run as TF32 in both the kernels and XLA by default, so the reference is computed at 'highest'
precision and float32 tolerances are those of TF32 (METHOD: ~3e-4 relative, here 2e-3).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shardline.kernels.attention import api, reference
from shardline.kernels.moe import api as moe_api, reference as moe_reference
from tests import helpers
from tests.kernels.attention_cases import CASES, compare, inputs, vit_losses

pytestmark = pytest.mark.skipif(jax.devices()[0].platform != "gpu", reason="needs a GPU (native Triton kernels)")

TF32_SCALE = 100  # x the float32 tolerance of 2e-5


def _highest(fn):
  def wrapped(*args):
    with jax.default_matmul_precision("highest"):
      return fn(*args)
  return wrapped


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}-l{c[1]}-d{c[3]}{'-seg' if c[6] else ''}")
def test_native_kernel_matches_reference_float32(case):
  b, l, h, d, kind, block, seg, prefix = case
  q, k, v, do, segments = inputs(b, l, h, d, jnp.float32, seg)
  masks = dict(mask_kind=kind, block_size=block, q_segment_ids=segments, kv_segment_ids=segments,
               block_prefix=prefix)
  compare(lambda q, k, v: api.flash_attention(q, k, v, backend="gpu", interpret=False, **masks),
          _highest(lambda q, k, v: reference.attention(q, k, v, **masks)), q, k, v, do, jnp.float32,
          scale=TF32_SCALE)


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("kind, block, prefix", [("none", None, None), ("causal", None, None),
                                                 ("block_causal", 39, 36)])
def test_native_kernel_matches_reference_bfloat16(d, kind, block, prefix):
  q, k, v, do, _ = inputs(2, 156, 4, d, jnp.bfloat16, False)
  masks = dict(mask_kind=kind, block_size=block, block_prefix=prefix)
  compare(lambda q, k, v: api.flash_attention(q, k, v, backend="gpu", interpret=False, **masks),
          lambda q, k, v: reference.attention(q, k, v, **masks), q, k, v, do, jnp.bfloat16)


def test_native_kernel_is_a_triton_call_and_skips_nothing_it_needs():
  """The compiled program holds the Triton kernels (not an XLA fallback), and a poisoned cotangent shows."""
  q, k, v, do, _ = inputs(1, 256, 2, 128, jnp.bfloat16, False)
  fn = jax.jit(jax.grad(lambda q, k, v: jnp.sum(api.flash_attention(q, k, v, backend="gpu", interpret=False)
                                               .astype(jnp.float32)), argnums=(0, 1, 2)))
  text = fn.lower(q, k, v).compile().as_text()
  calls = [line for line in text.splitlines() if "custom-call" in line and "triton" in line]
  assert len(calls) >= 2, text[:3000]  # the forward kernel and the backward kernel(s)
  grads = fn(q, k, v)
  assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in grads)


def _check_grouped_matmul(implementation, e, g, c, k, n, dtype, **kwargs):
  keys = jax.random.split(jax.random.PRNGKey(e * c + n), 4)
  lhs = jax.random.normal(keys[0], (e, g, c, k), jnp.float32).astype(dtype)
  rhs = (jax.random.normal(keys[1], (e, k, n), jnp.float32) / np.sqrt(k)).astype(dtype)
  counts = jax.random.randint(keys[2], (e, g), 0, c + 1).at[0, 0].set(0).at[-1, -1].set(c)
  lhs = jnp.where(moe_reference.row_mask(counts, c), lhs, 0)
  d_out = jax.random.normal(keys[3], (e, g, c, n), jnp.float32).astype(dtype)
  kernel = jax.jit(lambda a, b: moe_api.grouped_matmul(a, b, counts, implementation, **kwargs))
  ref = _highest(lambda a, b: moe_reference.grouped_matmul(a, b, counts))
  out, vjp = jax.vjp(kernel, lhs, rhs)
  ref_out, ref_vjp = jax.vjp(ref, lhs, rhs)
  scale = TF32_SCALE if dtype == "float32" else 5
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(out), f32(ref_out), **helpers.tolerance(dtype, scale=scale))
  for got, want in zip(vjp(d_out), ref_vjp(d_out)):
    largest = max(float(jnp.max(jnp.abs(want.astype(jnp.float32)))), 1.0)
    np.testing.assert_allclose(f32(got) / largest, f32(want) / largest, **helpers.tolerance(dtype, scale=scale))


@pytest.mark.parametrize("e, g, c, k, n, dtype", [(4, 2, 64, 128, 256, "float32"), (8, 2, 48, 256, 128, "bfloat16"),
                                                 (4, 2, 25, 96, 200, "bfloat16")])  # sizes padded to powers of two
def test_native_grouped_matmul_matches_reference(e, g, c, k, n, dtype):
  _check_grouped_matmul("pallas", e, g, c, k, n, dtype, backend="gpu", interpret=False)


@pytest.mark.parametrize("e, g, c, k, n, dtype", [(4, 2, 64, 128, 256, "float32"), (8, 2, 48, 256, 128, "bfloat16"),
                                                 (4, 2, 25, 96, 200, "bfloat16")])
def test_native_ragged_dot_grouped_matmul_matches_reference(e, g, c, k, n, dtype):
  _check_grouped_matmul("ragged", e, g, c, k, n, dtype)
