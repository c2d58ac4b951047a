"""Collective matmuls: numerics against plain references, training parity, and overlap in compiled HLO."""
import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import topologies
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from shardline.models.vit22b.classifier import ImageClassifier
from shardline.partitioning import async_linear
from shardline.training.planning.hlo import overlap as hlo_overlap
from shardline.partitioning import rules
from shardline.partitioning.context import Partitioner, use_partitioner
from shardline.tasks import digits
from shardline.training.state import step as step_lib
from shardline.training.state import train_state
from tests import helpers

MESHES = [(1, 8), (2, 4), (4, 2)]  # fsdp x tensor


def _one_d_mesh():
  return Mesh(np.array(jax.devices()), ("tensor",), axis_types=(AxisType.Auto,))


def _inputs(dtype, gathered):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(k1, (4, 16, 32) if gathered else (4, 16, 24), jnp.float32).astype(dtype)
  w = jax.random.normal(k2, (32, 24) if gathered else (24, 32), jnp.float32).astype(dtype) / 5
  return x, w


def _reference(x, w):
  return jnp.einsum("bmk,kn->bmn", x, w, preferred_element_type=jnp.float32).astype(x.dtype)


def _check_op(op, mesh, batch_axes, dtype, bidirectional, gathered):
  x, w = _inputs(dtype, gathered)
  fn = functools.partial(op, mesh=mesh, axis="tensor", batch_axes=batch_axes, bidirectional=bidirectional)
  tol = helpers.tolerance(dtype, scale=5)
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(x, w), np.float32),
                             np.asarray(_reference(x, w), np.float32), **tol)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w).astype(jnp.float32) ** 2))
  got = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))(x, w)
  want = jax.grad(loss(_reference), argnums=(0, 1))(x, w)
  for g, r in zip(got, want):
    scale = float(jnp.max(jnp.abs(r.astype(jnp.float32))))
    np.testing.assert_allclose(np.asarray(g, np.float32) / scale, np.asarray(r, np.float32) / scale, **tol)


@pytest.mark.parametrize("gathered", [True, False], ids=["all_gather_matmul", "matmul_reduce_scatter"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
@pytest.mark.parametrize("fsdp, tensor", MESHES)
def test_matches_reference_on_2d_meshes(fsdp, tensor, bidirectional, gathered):
  op = async_linear.all_gather_matmul if gathered else async_linear.matmul_reduce_scatter
  _check_op(op, helpers.mesh(fsdp=fsdp, tensor=tensor), ("fsdp",), jnp.float32, bidirectional, gathered)


@pytest.mark.parametrize("gathered", [True, False], ids=["all_gather_matmul", "matmul_reduce_scatter"])
def test_matches_reference_on_1d_mesh_in_bfloat16(gathered):
  op = async_linear.all_gather_matmul if gathered else async_linear.matmul_reduce_scatter
  _check_op(op, _one_d_mesh(), (), jnp.bfloat16, True, gathered)
  _check_op(op, _one_d_mesh(), (), jnp.float32, False, gathered)


def test_shape_errors_are_clear():
  with pytest.raises(ValueError, match="divisible by 8"):
    async_linear.all_gather_matmul(jnp.ones((2, 12, 8)), jnp.ones((8, 16)), _one_d_mesh(), "tensor")


def _train_losses(linear_impl, steps=20):
  model = ImageClassifier(helpers.tiny_vit(linear_impl=linear_impl))
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR)
  tx = optax.adamw(3e-3)
  spec = model.batch_spec(32)
  _, sharding, _ = train_state.abstract_state(model, tx, spec, partitioner)
  batch_sharding = {k: partitioner.sharding(model.batch_axes()[k]) for k in spec}
  state = train_state.init_state(model, tx, spec, partitioner, sharding)
  step = step_lib.jit_train_step(step_lib.train_step_fn(model, tx, lambda s: 3e-3), partitioner, sharding,
                                 batch_sharding)
  data = digits.load_split("train")
  losses = []
  for i in range(steps):
    rows = slice((i * 32) % 1408, (i * 32) % 1408 + 32)
    state, metrics = step(state, jax.device_put({"image": data["image"][rows], "label": data["label"][rows]},
                                                batch_sharding))
    losses.append(float(metrics["loss"][0]))
  return np.array(losses)


# XLA:CPU's in-process collectives deadlocked on this 8-device training step when its thread pools had one
# thread per device (3 of 5 runs on the 2-core machine); `runtime.set_cpu_xla_flags` now sizes them by $NPROC
# (0 of 5). The training still runs in a subprocess with a time limit, so that a hang fails in minutes rather
# than at XLA's 10-minute collective timeout, and a run that hangs is tried once more; a mismatch fails at once.
_TRAIN_IN_SUBPROCESS = ("import json, sys\n"
                        "import tests.conftest  # 8 CPU devices, the XLA flags, the compilation cache\n"
                        "from tests.partitioning import test_async_linear as t\n"
                        "print(json.dumps(t._train_losses(sys.argv[1]).tolist()))\n")


def _train_losses_in_subprocess(linear_impl, timeout=240, attempts=2):
  for attempt in range(attempts):
    try:
      result = subprocess.run([sys.executable, "-c", _TRAIN_IN_SUBPROCESS, linear_impl], capture_output=True,
                              text=True, timeout=timeout, env=helpers.subprocess_env(), cwd=helpers.REPO)
    except subprocess.TimeoutExpired:
      if attempt + 1 == attempts:
        raise
      continue
    assert result.returncode == 0, result.stderr[-3000:]
    return np.array(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.full
def test_vit22b_trains_the_same_with_async_linear_ops():
  xla, overlapped = _train_losses_in_subprocess("xla"), _train_losses_in_subprocess("async")
  np.testing.assert_allclose(overlapped, xla, rtol=2e-4, atol=2e-4)
  assert xla[-1] < 0.8 * xla[0]  # and they really train


def test_cpu_hlo_permutes_do_not_depend_on_their_steps_matmul():
  mesh = helpers.mesh(fsdp=2, tensor=4)
  x, w = _inputs(jnp.float32, True)
  for bidirectional in (False, True):
    fn = lambda x, w: async_linear.all_gather_matmul(x, w, mesh, "tensor", ("fsdp",), bidirectional)
    counts = hlo_overlap.independent_matmuls(jax.jit(fn).lower(x, w).compile().as_text())
    assert len(counts) == (3 if not bidirectional else 6), counts
    assert min(counts) >= 1, counts


def _tpu_mesh():
  topology = topologies.get_topology_desc("v4:2x2x1", "tpu")
  return Mesh(np.array(topology.devices).reshape(1, 2, 4, 1), ("data", "fsdp", "tensor", "expert"),
              axis_types=(AxisType.Auto,) * 4)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
def test_tpu_schedule_overlaps_every_transfer_with_matmuls(bidirectional, capsys):
  mesh = _tpu_mesh()
  spec = lambda shape, pspec: jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, pspec))
  cases = {
      "all_gather_matmul": (async_linear.all_gather_matmul,
                            spec((8, 1024, 1024), P("fsdp", "tensor", None)), spec((1024, 2048), P(None, "tensor"))),
      "matmul_reduce_scatter": (async_linear.matmul_reduce_scatter,
                                spec((8, 1024, 2048), P("fsdp", None, "tensor")), spec((2048, 1024), P("tensor", None))),
  }
  for name, (op, x, w) in cases.items():
    fn = lambda x, w, op=op: op(x, w, mesh, "tensor", ("fsdp",), bidirectional)
    counts = hlo_overlap.overlapped_matmuls(jax.jit(fn).lower(x, w).compile().as_text())
    with capsys.disabled():
      print(f"\n  TPU v4:2x2x1 {name} ({'bi' if bidirectional else 'uni'}directional): matmuls between each "
            f"collective-permute start/done = {counts}")
    assert len(counts) == (3 if not bidirectional else 6), counts
    assert min(counts) >= 1, counts


def test_a_batch_that_does_not_split_falls_back_to_plain_matmuls():
  """Initialisation traces the model with a batch of one, which cannot split over fsdp=4."""
  partitioner = Partitioner(helpers.mesh(fsdp=4, tensor=2), rules.FSDP_TENSOR)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 64))
  w = jax.random.normal(jax.random.PRNGKey(1), (64, 8, 8))
  with use_partitioner(partitioner):
    (y,) = async_linear.fused_all_gather_matmul(x, [w])
  # [b, l, e] x [e, h, d] -> [b, l, h, d]
  np.testing.assert_allclose(y, jnp.einsum("ble,ehd->blhd", x, w), rtol=1e-5, atol=1e-5)
