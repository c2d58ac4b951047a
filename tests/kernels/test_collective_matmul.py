"""The Pallas collective matmul kernel: TPU interpret mode on 8 CPU devices (with the race detector) against the
reference, gradients, the ViT-22B path, and an ahead-of-time compile for a TPU v4 topology."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call  # the race detector's state
from jax.experimental import pallas as pl
from jax.experimental import topologies
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from shardline.kernels.collective_matmul import api
from shardline.partitioning import async_linear
from tests import helpers

RACES = pltpu.InterpretParams(detect_races=True)


def _inputs(dtype, b=2, m=64, k=128, n=256):
  x = jax.random.normal(jax.random.PRNGKey(0), (b, m, k), jnp.float32).astype(dtype)
  w = (jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32) / 8).astype(dtype)
  return x, w


@pytest.mark.full
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("fsdp, tensor", [(2, 4), (1, 8)])
def test_kernel_matches_reference_without_races(fsdp, tensor, dtype):
  mesh = helpers.mesh(fsdp=fsdp, tensor=tensor)
  x, w = _inputs(dtype)
  interpret_pallas_call.reset_tpu_interpret_mode_state()
  got = jax.jit(api.forward_fn(mesh, "tensor", ("fsdp",), "pallas", interpret=RACES))(x, w).block_until_ready()
  want = jax.jit(api.forward_fn(mesh, "tensor", ("fsdp",), "xla"))(x, w)
  assert not interpret_pallas_call.races.races_found
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **helpers.tolerance(dtype))
  np.testing.assert_allclose(np.asarray(want, np.float32), np.asarray(x @ w, np.float32),
                             **helpers.tolerance(dtype, scale=5))


def test_race_detector_catches_an_unsynchronised_kernel():
  """Negative control: the detector does report a race, so the check above can fail."""
  mesh = Mesh(np.array(jax.devices()[:2]), ("ring",), axis_types=(AxisType.Auto,))

  def racy(x_ref, o_ref, send, recv):
    other = 1 - jax.lax.axis_index("ring")
    copy = pltpu.make_async_remote_copy(x_ref, o_ref, send, recv, device_id={"ring": other},
                                        device_id_type=pl.DeviceIdType.MESH)
    copy.start()
    o_ref[...] = x_ref[...] * 2  # writes the buffer the neighbour's DMA is writing, with no ordering
    copy.wait_send()
    copy.wait_recv()

  def local(x):
    return pl.pallas_call(racy, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                          in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
                          out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
                          scratch_shapes=[pltpu.SemaphoreType.DMA, pltpu.SemaphoreType.DMA],
                          interpret=pltpu.InterpretParams(detect_races=True, dma_execution_mode="eager"))(x)
  interpret_pallas_call.reset_tpu_interpret_mode_state()
  jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("ring"), out_specs=P("ring"), check_vma=False))(
      jnp.ones((16, 128))).block_until_ready()
  assert interpret_pallas_call.races.races_found


def test_gradients_match_reference():
  mesh = helpers.mesh(fsdp=2, tensor=4)
  x, w = _inputs(jnp.float32, m=32, k=64, n=128)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) ** 2))
  got = jax.jit(jax.grad(loss(functools.partial(api.all_gather_matmul, mesh=mesh, axis="tensor",
                                                batch_axes=("fsdp",))), argnums=(0, 1)))(x, w)
  want = jax.grad(loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_async_linear_with_pallas_forward_and_ring_gradients():
  mesh = helpers.mesh(fsdp=2, tensor=4)
  x, w = _inputs(jnp.float32, m=32, k=64, n=128)
  fn = functools.partial(async_linear.all_gather_matmul, mesh=mesh, axis="tensor", batch_axes=("fsdp",),
                         kernel="pallas")
  np.testing.assert_allclose(jax.jit(fn)(x, w), x @ w, rtol=1e-5, atol=1e-4)
  got = jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))(x, w)
  want = jax.grad(lambda x, w: jnp.sum((x @ w) ** 2), argnums=(0, 1))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_validation_messages():
  mesh = helpers.mesh(fsdp=2, tensor=4)
  with pytest.raises(ValueError, match="divisible by 4"):
    api.all_gather_matmul(jnp.ones((2, 6, 8)), jnp.ones((8, 16)), mesh, "tensor")
  with pytest.raises(ValueError, match="differs"):
    api.all_gather_matmul(jnp.ones((2, 8, 8)), jnp.ones((4, 16)), mesh, "tensor")
  assert api.block_sizes(m=32, n=5376, k=6144, itemsize=2) == (32, 384)


@pytest.mark.full
@pytest.mark.parametrize("ring", [2, 4, 8])
def test_compiles_for_tpu_v4_at_vit22b_shapes(ring):
  topology = topologies.get_topology_desc("v4:2x2x1", "tpu")
  mesh = Mesh(np.array(topology.devices).reshape(8 // ring, ring), ("fsdp", "tensor"),
              axis_types=(AxisType.Auto,) * 2)
  # ViT-22B's fused input projection: 256 tokens of width 6144 -> 3 x 6144 (QKV) + 24576 (MLP).
  x = jax.ShapeDtypeStruct((8 // ring, 256, 6144), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P("fsdp", "tensor", None)))
  w = jax.ShapeDtypeStruct((6144, 3 * 6144 + 24576), jnp.bfloat16, sharding=NamedSharding(mesh, P(None, "tensor")))
  fn = api.forward_fn(mesh, "tensor", ("fsdp",), "pallas", interpret=False)
  compiled = jax.jit(fn).lower(x, w).compile()
  assert "tpu_custom_call" in compiled.as_text()  # the Mosaic kernel, not an XLA fallback


@pytest.mark.full
def test_vit22b_forward_with_the_pallas_kernel_matches_xla():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from shardline.models.vit22b.classifier import ImageClassifier  # pylint: disable=g-import-not-at-top
  from shardline.partitioning import rules  # pylint: disable=g-import-not-at-top
  from shardline.partitioning.context import Partitioner  # pylint: disable=g-import-not-at-top
  from shardline.training.state.step import PartitionedFunction  # pylint: disable=g-import-not-at-top
  partitioner = Partitioner(helpers.mesh(fsdp=2, tensor=4), rules.FSDP_TENSOR)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1)), "label": jnp.arange(4)}
  losses = {}
  for impl in ("xla", "pallas"):
    model = ImageClassifier(helpers.tiny_vit(linear_impl=impl, depth=1))
    params = nn.unbox(model.init(jax.random.PRNGKey(1), batch))
    loss = PartitionedFunction(lambda p, b: model.loss_and_metrics(p, b, None)[0], partitioner)
    losses[impl] = float(loss(params, batch))
  np.testing.assert_allclose(losses["pallas"], losses["xla"], rtol=1e-5)
