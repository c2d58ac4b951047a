"""Flash attention: both Pallas kernels (GPU/Triton and TPU/Mosaic, in interpret mode on CPU) against the
reference for every mask kind, odd lengths and head dims, forward and dq/dk/dv; TPU AOT compiles; models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shardline.kernels.attention import api, gpu, reference, tpu
from tests.kernels.attention_cases import CASES, compare as _compare, inputs as _inputs, vit_losses

@pytest.mark.full
@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}-l{c[1]}-d{c[3]}{'-seg' if c[6] else ''}")
def test_kernel_matches_reference_float32(backend, case):
  b, l, h, d, kind, block, seg, prefix = case
  q, k, v, do, segments = _inputs(b, l, h, d, jnp.float32, seg)
  masks = dict(mask_kind=kind, block_size=block, q_segment_ids=segments, kv_segment_ids=segments,
               block_prefix=prefix)
  _compare(lambda q, k, v: api.flash_attention(q, k, v, backend=backend, **masks),
           lambda q, k, v: reference.attention(q, k, v, **masks), q, k, v, do, jnp.float32)


@pytest.mark.full
@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("d", [64, 128, 256])
def test_kernel_matches_reference_bfloat16(backend, d):
  q, k, v, do, _ = _inputs(1, 72, 2, d, jnp.bfloat16, False)
  _compare(lambda q, k, v: api.flash_attention(q, k, v, mask_kind="causal", backend=backend),
           lambda q, k, v: reference.attention(q, k, v, mask_kind="causal"), q, k, v, do, jnp.bfloat16)


@pytest.mark.full
def test_small_blocks_exercise_many_tiles_and_skipping():
  q, k, v, do, _ = _inputs(1, 96, 1, 64, jnp.float32, False)
  for kind, block, prefix in (("causal", None, None), ("block_causal", 12, None), ("block_causal", 24, 20)):
    masks = dict(mask_kind=kind, block_size=block, block_prefix=prefix)
    _compare(lambda q, k, v: api.flash_attention(q, k, v, backend="gpu", block_q=16, block_k=16, **masks),
             lambda q, k, v: reference.attention(q, k, v, **masks), q, k, v, do, jnp.float32)


def test_block_causal_mask_is_exactly_block_causal():
  mask = np.asarray(reference.make_mask(12, 12, "block_causal", block_size=4))[0, 0]
  expected = np.array([[j // 4 <= i // 4 for j in range(12)] for i in range(12)])
  np.testing.assert_array_equal(mask, expected)
  # With a prefix of 2: in its own block a token sees the block's first 2 tokens and those up to itself.
  mask = np.asarray(reference.make_mask(12, 12, "block_causal", block_size=4, block_prefix=2))[0, 0]
  expected = np.array([[j // 4 < i // 4 or (j // 4 == i // 4 and (j % 4 < 2 or j <= i)) for j in range(12)]
                       for i in range(12)])
  np.testing.assert_array_equal(mask, expected)
  assert mask[4, 5] and not mask[6, 7] and mask[7, 6]  # prefix both ways, the rest causal


@pytest.mark.parametrize("platform, mask, length, head_dim, segmented, want, measured", [
    ("gpu", "none", 256, 128, False, "pallas", True),  # 0.753 ms against cudnn's 0.866
    ("gpu", "none", 300, 128, False, "pallas", True),  # nearer 256 than 576 on a log scale
    ("gpu", "none", 500, 128, False, "cudnn", True),
    ("gpu", "none", 8192, 128, False, "cudnn", True),
    ("gpu", "causal", 8192, 128, False, "cudnn", True),
    ("gpu", "block_causal", 156, 64, False, "pallas", True),
    ("gpu", "none", 256, 128, True, "pallas", False),  # segment ids: cudnn cannot, and no measurement had them
    ("gpu", "none", 197, 64, False, "cudnn", False),  # nothing measured at head_dim 64 without a mask
    ("gpu", "causal", 1024, 128, False, "cudnn", False),  # 8x from the one causal measurement
    ("tpu", "none", 256, 128, False, "pallas", False),
    ("cpu", "block_causal", 156, 64, False, "xla", False),
])
def test_auto_picks_the_measured_fastest_or_the_platforms_rule(platform, mask, length, head_dim, segmented, want,
                                                               measured):
  chosen, why = api.choose(platform, mask, length, head_dim, segmented)
  assert chosen == want, why
  assert why.startswith("measured fastest" if measured else "no measurement"), why


def test_measured_entries_name_the_fastest_of_their_own_figures():
  for rows in api.MEASURED.values():
    for _, fastest, ms, others in rows:
      assert fastest in api.IMPLEMENTATIONS and ms < min(others.values())


def test_validation_messages():
  x = jnp.ones((1, 8, 2, 16))
  with pytest.raises(ValueError, match="rank 4"):
    api.attention(x[0], x, x)
  with pytest.raises(ValueError, match="needs block_size"):
    api.attention(x, x, x, mask_kind="block_causal")
  with pytest.raises(ValueError, match="block_prefix=5 needs"):
    api.attention(x, x, x, mask_kind="block_causal", block_size=4, block_prefix=5)
  with pytest.raises(ValueError, match="dtypes differ"):
    api.attention(x, x.astype(jnp.bfloat16), x)
  with pytest.raises(ValueError, match="Unknown attention implementation"):
    api.attention(x, x, x, implementation="flash")
  with pytest.raises(ValueError, match="both q_segment_ids and kv_segment_ids"):
    api.attention(x, x, x, q_segment_ids=jnp.zeros((1, 8), jnp.int32))
  with pytest.raises(ValueError, match="cudnn attention supports"):
    api.attention(x, x, x, mask_kind="block_causal", block_size=4, implementation="cudnn")
  assert api.block_sizes(256, 256) == (256, 256)
  assert gpu.choose_tuning(64, 4, 37, 37).padding_multiple() == (64, 64)  # not padded past a power of two
  assert gpu.choose_tuning(256, 4, 1024, 1024).fwd == (32, 16)  # 4x the bytes per row: a quarter of the rows


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("kind, block, seg, prefix", [("none", None, True, None), ("causal", None, False, None),
                                                      ("block_causal", 39, False, 36)])
def test_tpu_kernels_compile_for_tpu_v4(d, kind, block, seg, prefix):
  device = topologies.get_topology_desc("v4:2x2x1", "tpu").devices[0]
  mesh = Mesh(np.array([device]), ("x",))
  spec = lambda shape, dtype=jnp.bfloat16: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))
  b, h, l = 2, 4, 512
  kw = dict(scale=d ** -0.5, block_q=128, block_k=128, kv_len=500, mask_kind=kind, block_size=block,
            block_prefix=prefix)
  segs = (spec((b, l), jnp.int32), spec((b, l), jnp.int32)) if seg else (None, None)
  qkv = [spec((b, h, l, d))] * 3
  with jax.set_mesh(mesh):  # the kernels read the target's TPU generation from the mesh's devices
    fwd = jax.jit(lambda q, k, v, qs, ks: tpu.forward(q, k, v, qs, ks, **kw)).lower(*qkv, *segs).compile()
    bwd = jax.jit(lambda q, k, v, qs, ks, o, lse, do: tpu.backward(q, k, v, qs, ks, o, lse, do, **kw)).lower(
        *qkv, *segs, spec((b, h, l, d)), spec((b, h, l, 128), jnp.float32), spec((b, h, l, d))).compile()
  assert fwd.as_text().count("tpu_custom_call") == 1  # one Mosaic kernel
  assert bwd.as_text().count("tpu_custom_call") == 2  # separate dq and dk/dv kernels


@pytest.mark.full
def test_vit22b_trains_with_pallas_attention_in_interpret_mode():
  from shardline.tasks import digits  # pylint: disable=g-import-not-at-top  (TensorFlow: this test alone)
  data = digits.load_split("train")
  batch = {"image": data["image"][:8], "label": data["label"][:8]}
  losses = vit_losses(batch, steps=3, learning_rate=1e-2, depth=1)
  np.testing.assert_allclose(losses["pallas"], losses["xla"], rtol=1e-4)
  assert losses["pallas"][-1] < losses["pallas"][0]
