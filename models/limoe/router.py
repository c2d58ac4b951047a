"""Top-k routing with expert capacity and Batch Priority Routing (BPR).

Tokens are routed in groups; within a group each expert takes at most `capacity` tokens. Each token asks for
its top-k experts. Slots are granted in priority order: with BPR by descending router confidence (a token's
top gate), otherwise in token order; a request past an expert's capacity is dropped, and a token none of whose
requests succeeded passes through the residual path only. The router also reports, per token, whether it got
its first choice, which is the routing success rate of the paper.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Routing:
  """One group-batch of routing decisions. G groups of S tokens, E experts, C slots, k choices.

  Attributes:
    expert: [G, S, k] chosen experts.
    slot: [G, S, k] slot within the expert's capacity buffer, or -1 if the request was dropped.
    gate: [G, S, k] combine weight (the router probability), 0 where dropped.
    probs: [G, S, E] router probabilities (float32), for the auxiliary losses.
    logits: [G, S, E] router logits, for the z-loss.
    noisy_logits: [G, S, E] the logits the choice was made from (with noise in training).
    counts: [G, E] tokens each expert took.
    capacity: C.
  """
  expert: jax.Array
  slot: jax.Array
  gate: jax.Array
  probs: jax.Array
  logits: jax.Array
  noisy_logits: jax.Array
  counts: jax.Array
  capacity: int

  @property
  def kept(self) -> jax.Array:
    """[G, S]: the token's first choice was granted."""
    return self.slot[..., 0] >= 0


def capacity(tokens_per_group: int, num_experts: int, capacity_factor: float, top_k: int) -> int:
  """ceil(capacity_factor x tokens x k / experts), at least 1."""
  return max(1, math.ceil(capacity_factor * tokens_per_group * top_k / num_experts))


def route(logits: jax.Array, *, top_k: int, capacity_factor: float, batch_priority: bool,
          valid: jax.Array = None, noise: jax.Array = None) -> Routing:
  """Routes [G, S, E] logits. `valid` [G, S] masks padding tokens out (they take no slot)."""
  g, s, e = logits.shape
  logits = logits.astype(jnp.float32)
  noisy = logits if noise is None else logits + noise
  probs = jax.nn.softmax(noisy, axis=-1)
  gates, experts = jax.lax.top_k(probs, top_k)  # [G, S, k]
  if valid is None:
    valid = jnp.ones((g, s), bool)
  cap = capacity(s, e, capacity_factor, top_k)

  # Priority order within each group: highest top gate first (BPR), else token order; padding last.
  priority = jnp.where(valid, gates[..., 0], -1.0) if batch_priority else jnp.where(valid, -jnp.arange(s), -s - 1.0)
  order = jnp.argsort(-priority, axis=1, stable=True)  # [G, S] token indices, most urgent first
  rank = jnp.argsort(order, axis=1)  # position of each token in that order

  # Requests in priority order, choice by choice (all first choices before any second choice, as in V-MoE).
  sorted_experts = jnp.take_along_axis(experts, order[..., None], axis=1)  # [G, S, k]
  sorted_valid = jnp.take_along_axis(valid, order, axis=1)
  requests = jax.nn.one_hot(sorted_experts, e, dtype=jnp.int32) * sorted_valid[..., None, None]  # [G, S, k, E]
  requests = jnp.swapaxes(requests, 1, 2).reshape(g, top_k * s, e)  # choice-major: [G, k*S, E]
  position = jnp.cumsum(requests, axis=1) - requests  # slots already taken before each request
  granted = requests * (position < cap)
  slot_sorted = jnp.sum((position + 1) * granted, axis=-1) - 1  # [G, k*S], -1 if dropped
  slot_sorted = jnp.swapaxes(slot_sorted.reshape(g, top_k, s), 1, 2)  # [G, S, k] in priority order
  slot = jnp.take_along_axis(slot_sorted, rank[..., None], axis=1)  # back to token order
  gate = jnp.where(slot >= 0, gates, 0.0)
  counts = jnp.sum(granted, axis=1)  # [G, E]
  return Routing(experts, slot, gate, probs, logits, noisy, counts, cap)
