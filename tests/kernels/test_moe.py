"""The grouped-matmul MoE kernels (GPU/Triton and TPU/Mosaic, interpret mode on CPU) against the reference,
forward and gradients, with empty, partial and full expert buffers; validation; a TPU AOT compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shardline.kernels.moe import api, reference
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


def test_moe_layer_benchmark_runs_at_tiny_size(capsys):
  from benchmarks import moe_layer  # pylint: disable=g-import-not-at-top
  moe_layer.run([4], tokens=256, width=32, mlp_dim=64, group_size=128, top_k=1, capacity_factor=1.0,
                dtype=jnp.float32, grouped_impl="xla", iters=1)
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
  assert [row.split(" | ")[0] for row in rows[1:]] == ["| dense MLP (64)", "| one-hot einsum", "| grouped matmul"]
  assert all(float(row.split(" | ")[3]) > 0 for row in rows[1:])  # a finite, positive TFLOP/s in every row
