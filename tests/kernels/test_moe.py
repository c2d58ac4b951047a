"""The grouped-matmul MoE kernels (GPU/Triton and TPU/Mosaic, interpret mode on CPU) and the ragged_dot
implementation against the reference, forward and gradients, with empty, partial and full expert buffers;
validation; 'auto'; a TPU AOT compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shardline.kernels.moe import api, ragged, reference
from tests import helpers


def _inputs(e, g, c, k, n, dtype):
  keys = jax.random.split(jax.random.PRNGKey(e * c + n), 3)
  lhs = jax.random.normal(keys[0], (e, g, c, k), jnp.float32).astype(dtype)
  rhs = (jax.random.normal(keys[1], (e, k, n), jnp.float32) / np.sqrt(k)).astype(dtype)
  counts = jax.random.randint(keys[2], (e, g), 0, c + 1).at[0, 0].set(0).at[-1, -1].set(c)  # empty and full
  lhs = jnp.where(reference.row_mask(counts, c), lhs, 0)  # the router leaves unused slots zero
  return lhs, rhs, counts


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize("e, g, c, k, n, dtype", [
    (4, 2, 16, 128, 256, "float32"),
    (2, 3, 24, 128, 128, "float32"),  # a capacity that is not a power of two
    (4, 2, 16, 128, 128, "bfloat16"),
])
@pytest.mark.full
def test_kernel_matches_reference_forward_and_gradients(backend, e, g, c, k, n, dtype):
  lhs, rhs, counts = _inputs(e, g, c, k, n, dtype)
  d_out = jax.random.normal(jax.random.PRNGKey(7), (e, g, c, n), jnp.float32).astype(dtype)
  kernel = lambda a, b: api.grouped_matmul(a, b, counts, "pallas", backend=backend)
  ref = lambda a, b: reference.grouped_matmul(a, b, counts)
  out, vjp = jax.vjp(kernel, lhs, rhs)
  ref_out, ref_vjp = jax.vjp(ref, lhs, rhs)
  tol = helpers.tolerance(dtype, scale=5)
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(out), f32(ref_out), **tol)
  assert not np.any(f32(out)[~np.asarray(reference.row_mask(counts, c))[..., 0]])  # empty rows are zero
  for got, want in zip(vjp(d_out), ref_vjp(d_out)):
    np.testing.assert_allclose(f32(got), f32(want), **helpers.tolerance(dtype, scale=50))


@pytest.mark.parametrize("e, g, c, k, n, dtype", [
    (4, 2, 16, 32, 48, "float32"),
    (3, 3, 5, 8, 24, "float32"),  # odd sizes: ragged_dot needs no blocks
    (4, 2, 16, 32, 64, "bfloat16"),
])
def test_ragged_dot_matches_reference_forward_and_gradients(e, g, c, k, n, dtype):
  lhs, rhs, counts = _inputs(e, g, c, k, n, dtype)
  d_out = jax.random.normal(jax.random.PRNGKey(8), (e, g, c, n), jnp.float32).astype(dtype)
  out, vjp = jax.vjp(jax.jit(lambda a, b: api.grouped_matmul(a, b, counts, "ragged")), lhs, rhs)
  ref_out, ref_vjp = jax.vjp(lambda a, b: reference.grouped_matmul(a, b, counts), lhs, rhs)
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(out), f32(ref_out), **helpers.tolerance(dtype, scale=5))
  assert not np.any(f32(out)[~np.asarray(reference.row_mask(counts, c))[..., 0]])  # empty rows are zero
  for got, want in zip(vjp(d_out), ref_vjp(d_out)):
    np.testing.assert_allclose(f32(got), f32(want), **helpers.tolerance(dtype, scale=50))


@pytest.mark.full
def test_ragged_packing_puts_each_experts_rows_together_and_back():
  lhs, _, counts = _inputs(3, 2, 4, 1, 1, "float32")
  # Row (e, g, c) holds 100 e + 10 g + c + 1 where filled, so the packed order can be read off.
  marks = (100 * jnp.arange(3)[:, None, None] + 10 * jnp.arange(2)[None, :, None] + jnp.arange(4) + 1.0)[..., None]
  lhs = jnp.where(reference.row_mask(counts, 4), marks, 0)
  packed = np.asarray(ragged.pack(lhs, counts))[:, 0]
  want = [100 * e + 10 * g + c + 1 for e in range(3) for g in range(2) for c in range(int(counts[e, g]))]
  assert packed[:len(want)].tolist() == want and not packed[len(want):].any()
  np.testing.assert_array_equal(ragged.unpack(ragged.pack(lhs, counts), counts, 4), lhs)


def test_auto_takes_the_measured_table_entry_of_the_platform():
  assert api.resolve("auto", "cpu") == api.AUTO["cpu"][0]
  assert api.resolve("auto", "gpu") == api.AUTO["gpu"][0] == "pallas"  # no GPU comparison measured yet
  assert api.resolve("ragged", "gpu") == "ragged"
  assert all(entry[0] in api.IMPLEMENTATIONS and entry[0] != "auto" and entry[1] for entry in api.AUTO.values())
  lhs, rhs, counts = _inputs(2, 2, 8, 16, 16, "float32")
  np.testing.assert_allclose(api.grouped_matmul(lhs, rhs, counts, "auto"), reference.grouped_matmul(lhs, rhs, counts),
                             **helpers.tolerance("float32"))


def test_kernel_is_not_the_reference_on_bad_counts():
  """Negative control: the comparison above notices when the kernel is given different counts."""
  lhs, rhs, counts = _inputs(2, 2, 16, 128, 128, "float32")
  wrong = api.grouped_matmul(lhs, rhs, jnp.full_like(counts, 16), "pallas", backend="tpu")
  fewer = api.grouped_matmul(lhs, rhs, counts // 2, "pallas", backend="tpu")
  assert np.allclose(wrong, reference.grouped_matmul(lhs, rhs, counts), atol=1e-4)  # rows past counts are 0
  assert not np.allclose(fewer, reference.grouped_matmul(lhs, rhs, counts), atol=1e-4)


def test_validation_messages():
  lhs, rhs, counts = _inputs(2, 2, 16, 128, 128, "float32")
  with pytest.raises(ValueError, match=r"lhs \[E, G, C, K\]"):
    api.grouped_matmul(lhs[0], rhs, counts)
  with pytest.raises(ValueError, match="expert counts or K differ"):
    api.grouped_matmul(lhs, rhs[:1], counts)
  with pytest.raises(ValueError, match="share a dtype"):
    api.grouped_matmul(lhs, rhs.astype(jnp.bfloat16), counts)
  with pytest.raises(ValueError, match="Unknown grouped matmul implementation"):
    api.grouped_matmul(lhs, rhs, counts, "cuda")


def test_compiles_for_tpu_v4_at_limoe_h14_shapes():
  """One expert shard of a LIMoE-H/14 MoE layer (width 1280, MLP 5120) compiles to one Mosaic kernel."""
  device = topologies.get_topology_desc("v4:2x2x1", "tpu").devices[0]
  mesh = Mesh(np.array([device]), ("x",))
  spec = lambda shape, dtype=jnp.bfloat16: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))
  e, g, c, k, n = 4, 2, 64, 1280, 5120
  fn = jax.jit(lambda a, b, counts: api.grouped_matmul(a, b, counts, "pallas", backend="tpu", interpret=False))
  with jax.set_mesh(mesh):
    compiled = fn.lower(spec((e, g, c, k)), spec((e, k, n)), spec((e, g), jnp.int32)).compile()
  assert compiled.as_text().count("tpu_custom_call") == 1


@pytest.mark.full
def test_moe_layer_benchmark_times_every_candidate_at_tiny_size(capsys):
  from benchmarks import moe_layer  # pylint: disable=g-import-not-at-top
  measured = moe_layer.run([4], tokens=256, width=32, mlp_dim=64, group_size=128, top_k=1, capacity_factor=1.0,
                           dtype=jnp.float32, impls=["ragged", "xla"], iters=1)
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith("| ")]
  assert [row.split(" | ")[0] for row in rows[1:]] == ["| dense MLP (64)", "| grouped dispatch only",
                                                       "| one-hot einsum", "| grouped ragged", "| grouped xla"]
  assert all(float(row.split(" | ")[2]) > 0 for row in rows[1:])  # a finite, positive time in every row
  shares = [float(row.split(" | ")[6].rstrip(" |")) for row in rows[-2:]]
  assert all(0 < share for share in shares)
  fastest = min(("ragged", "xla"), key=lambda impl: measured[f"grouped {impl} 4"])
  assert f"# fastest grouped implementation by experts: 4: {fastest}" in out
