"""Sparse upcycling: LIMoE initialised from its dense one-tower baseline's checkpoint copies each dense MLP into
every expert of the MoE layer that replaces it, starts the routers fresh, and copies everything else."""
import jax
import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.launch import gin_config
from shardline.launch import plan as plan_cli
from shardline.models.base import TransferRules
from shardline.training.lifecycle import checkpoints
from shardline.training.transfer import init_from
from shardline.training.transfer import param_mapping
from shardline.training.state import run_setup as setup
from shardline.training.state import train_state
from tests import helpers

DENSE_STEPS = 2
LIMOE_RULES = TransferRules(expert_stacks=((r"(block_\d+)/moe/(wi|bi|wo|bo)", r"\1/mlp/\2"),),
                            fresh_when_absent=(r"block_\d+/moe/router",))


def test_mapping_tiles_dense_mlps_into_experts_and_refuses_a_wrong_shape():
  source = {"block_1/mlp/wi": (8, 16), "block_1/mlp/bi": (16,), "embed": (4, 8)}
  target = {"block_1/moe/wi": (4, 8, 16), "block_1/moe/bi": (4, 16), "block_1/moe/router": (8, 4),
            "embed": (4, 8)}
  mapping = param_mapping.plan(source, target, LIMOE_RULES)
  kinds = {name: (a.kind, a.source) for name, a in mapping.actions.items()}
  assert kinds == {"block_1/moe/wi": ("tile", "block_1/mlp/wi"), "block_1/moe/bi": ("tile", "block_1/mlp/bi"),
                   "block_1/moe/router": ("fresh", None), "embed": ("load", "embed")}
  assert "2 copied into every expert (upcycled): block_1/moe/bi, block_1/moe/wi" in mapping.summary()
  with pytest.raises(UserError, match=r"no counterpart in the checkpoint: block_1/moe/wi"):
    param_mapping.plan({**source, "block_1/mlp/wi": (8, 32)}, target, LIMOE_RULES)  # another MLP width


@pytest.mark.full
def test_upcycled_limoe_starts_from_the_dense_checkpoint(tmp_path):
  dense_dir = tmp_path / "dense"
  helpers.save_initial_checkpoint("experiments/limoe_dense_tiny_digits_cpu8.gin", dense_dir, DENSE_STEPS, 16)

  gin_config.parse(["experiments/limoe_tiny_digits_upcycled_cpu8.gin"], [f"DENSE='{dense_dir}'", "MODEL_DIR='x'"])
  model = plan_cli.plan_run().model
  run = setup.build(model, total_steps=10, global_batch=16)
  fresh = train_state.init_state(model, run.tx, model.batch_spec(1), run.partitioner, run.state_sharding, seed=3)
  source = init_from.prepare(init_from.InitFrom(path=str(dense_dir)), run)
  state = source.load(run, fresh)
  saved = checkpoints.Checkpointer(str(dense_dir), read_only=True)
  whole = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=run.partitioner.replicated()),
                       saved.state_metadata(DENSE_STEPS)["params"], is_leaf=lambda x: hasattr(x, "shape"))
  dense = saved.restore_parts(DENSE_STEPS, {"params": whole})["params"]

  moe_blocks = sorted(name for name, block in state.params.items() if isinstance(block, dict) and "moe" in block)
  assert moe_blocks, "LIMoE tiny has MoE layers"
  for block in moe_blocks:
    experts, mlp = state.params[block]["moe"], dense[block]["mlp"]
    assert experts["wi"].shape[0] == model.config.num_experts
    for name in ("wi", "bi", "wo", "bo"):
      for expert in np.asarray(experts[name]):
        np.testing.assert_array_equal(expert, mlp[name])
    np.testing.assert_array_equal(experts["router"], fresh.params[block]["moe"]["router"])
    np.testing.assert_array_equal(state.params[block]["attn_norm"]["scale"], dense[block]["attn_norm"]["scale"])
  summary = source.describe()
  assert f"{4 * len(moe_blocks)} copied into every expert (upcycled)" in summary
  assert f"{len(moe_blocks)} kept as initialised" in summary and "unused" not in summary
  assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape, state.opt_state, fresh.opt_state))
