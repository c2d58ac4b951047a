"""The sparse MoE layer that replaces a block's MLP.

Tokens are cut into routing groups, routed (router.py), and sent to their experts' capacity buffers
[experts, groups, capacity, width] in one of two ways:
  * 'einsum': one-hot dispatch and combine tensors [groups, tokens, experts, capacity] and einsums, as in GShard;
  * 'grouped': by index (scatter into the buffers, gather back), with the expert MLP as the grouped matmul
    (kernels/moe; `grouped_impl` picks the Pallas kernel or ragged_dot, which skip each expert's unused capacity,
    the einsum reference, or 'auto').
Under the `expert` rule set the buffers are split over the `expert` mesh axis and the groups over the batch
axes, so moving tokens from batch-sharded groups to expert-sharded buffers is an all-to-all that XLA inserts.
Dropped tokens get no expert output: the block's residual carries them.
"""
from typing import Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from shardline.kernels.moe import api as moe_api
from shardline.models.common import params as params_lib
from shardline.models.limoe import router
from shardline.models.limoe.config import LIMoEConfig
from shardline.partitioning import axes
from shardline.partitioning.context import constrain
from shardline.core.errors import UserError
from shardline.partitioning.expert_parallel import map_experts

BUFFER_AXES = (axes.EXPERT, axes.BATCH, None, axes.EMBED)


def _einsum_dispatch(xg, r: router.Routing, wi, bi, wo, bo, dtype):
  e, c = wi.shape[0], r.capacity
  slot_hot = jax.nn.one_hot(r.slot, c, dtype=dtype)  # [g, s, k, c]; a dropped slot (-1) is all zeros
  expert_hot = jax.nn.one_hot(r.expert, e, dtype=dtype)  # [g, s, k, e]
  # [g, s, k, e] x [g, s, k, c] -> [g, s, e, c]
  dispatch = jnp.einsum("gske,gskc->gsec", expert_hot, slot_hot)
  combine = jnp.einsum("gske,gskc,gsk->gsec", expert_hot, slot_hot, r.gate.astype(dtype))
  # [g, s, e, c] x [g, s, m] -> [e, g, c, m]
  x_e = constrain(jnp.einsum("gsec,gsm->egcm", dispatch, xg), BUFFER_AXES)
  h = nn.gelu(jnp.einsum("egcm,emh->egch", x_e, wi) + bi[:, None, None])
  y_e = constrain(jnp.einsum("egch,ehm->egcm", h, wo) + bo[:, None, None], BUFFER_AXES)
  # [g, s, e, c] x [e, g, c, m] -> [g, s, m]
  return jnp.einsum("gsec,egcm->gsm", combine, y_e)


def _grouped_dispatch(xg, r: router.Routing, wi, bi, wo, bo, implementation):
  g, s, m = xg.shape
  e, c = wi.shape[0], r.capacity
  index = jnp.where(r.slot >= 0, r.expert * c + r.slot, e * c)  # [g, s, k]; e*c is out of range (dropped)
  rows = jnp.arange(g)[:, None]
  buffers = jnp.zeros((g, e * c, m), xg.dtype)
  for choice in range(index.shape[-1]):
    buffers = buffers.at[rows, index[..., choice]].set(xg, mode="drop")
  x_e = constrain(buffers.reshape(g, e, c, m).transpose(1, 0, 2, 3), BUFFER_AXES)  # [e, g, c, m]

  def experts(x_e, counts, wi, bi, wo, bo):
    mask = (jnp.arange(x_e.shape[2]) < counts[..., None])[..., None]
    h = nn.gelu(moe_api.grouped_matmul(x_e, wi, counts, implementation) + bi[:, None, None])
    return jnp.where(mask, moe_api.grouped_matmul(h, wo, counts, implementation) + bo[:, None, None], 0)

  y_e = map_experts(experts, x_e, r.counts.T, wi, bi, wo, bo)
  y_buffers = constrain(y_e, BUFFER_AXES).transpose(1, 0, 2, 3).reshape(g, e * c, m)
  out = jnp.zeros_like(xg)
  for choice in range(index.shape[-1]):
    picked = jnp.take_along_axis(y_buffers, jnp.minimum(index[..., choice], e * c - 1)[..., None], axis=1)
    out = out + picked * r.gate[..., choice, None].astype(xg.dtype)
  return out


class MoeMlp(nn.Module):
  """A mixture of `num_experts` MLPs with top-k routing. Returns (output, routing statistics)."""
  config: LIMoEConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, deterministic: bool = True
               ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    cfg = self.config
    b, l, m = x.shape
    group = cfg.group_size or l
    if (b * l) % group:
      raise UserError(f"limoe.LIMoEConfig.group_size={group} does not divide the {b * l} tokens of a batch.")
    xg = x.reshape(b * l // group, group, m)
    vg = valid.reshape(xg.shape[:2])
    e, h = cfg.num_experts, cfg.mlp_dim
    init = params_lib.lecun_normal()
    router_w = params_lib.param(self, "router", nn.initializers.normal(0.02), (m, e), (axes.EMBED, None))
    # [g, s, m] x [m, e] -> [g, s, e]
    logits = jnp.einsum("gsm,me->gse", xg.astype(jnp.float32), router_w)
    noise = None
    if not deterministic and cfg.router_noise_std > 0:
      noise = cfg.router_noise_std * jax.random.normal(self.make_rng("router"), logits.shape)
    r = router.route(logits, top_k=cfg.top_k, capacity_factor=cfg.capacity_factor,
                     batch_priority=cfg.batch_priority_routing, valid=vg, noise=noise)
    wi = params_lib.param(self, "wi", init, (e, m, h), (axes.EXPERT, axes.EMBED, axes.MLP)).astype(self.dtype)
    bi = params_lib.param(self, "bi", params_lib.zeros(), (e, h), (axes.EXPERT, axes.MLP)).astype(self.dtype)
    wo = params_lib.param(self, "wo", init, (e, h, m), (axes.EXPERT, axes.MLP, axes.EMBED)).astype(self.dtype)
    bo = params_lib.param(self, "bo", params_lib.zeros(), (e, m), (axes.EXPERT, axes.EMBED)).astype(self.dtype)
    if cfg.dispatch == "einsum":
      y = _einsum_dispatch(xg.astype(self.dtype), r, wi, bi, wo, bo, self.dtype)
    else:
      y = _grouped_dispatch(xg.astype(self.dtype), r, wi, bi, wo, bo, cfg.grouped_impl)
    stats = {"probs": r.probs.reshape(b * l, e), "logits": r.logits.reshape(b * l, e),
             "noisy_logits": r.noisy_logits.reshape(b * l, e), "valid": valid.reshape(-1).astype(jnp.float32),
             "kept": r.kept.reshape(-1).astype(jnp.float32), "expert": r.expert[..., 0].reshape(-1)}
    return y.reshape(b, l, m), stats
