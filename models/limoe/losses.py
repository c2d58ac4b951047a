"""LIMoE's training losses: contrastive InfoNCE, and the router's auxiliary losses.

Auxiliary losses (every weight is a gin setting of `limoe.aux_weights`):
  * importance (V-MoE): the squared coefficient of variation of each expert's total gate,
    CV(sum_tokens p)^2; it pushes the experts to equal importance.
  * load (V-MoE): the squared CV of each expert's expected load, where the chance that expert e is chosen is
    Phi((logit_e - t) / sigma): t is the k-th largest of the other noisy logits and sigma the router noise.
  * local entropy (LIMoE, per modality): the mean entropy of a token's routing distribution; minimising it
    makes each token's choice confident.
  * global entropy (LIMoE, per modality): max(0, tau - H(mean routing distribution)); it pushes a modality to
    spread over experts until its average distribution has entropy tau, so it need not use every expert.
  * z-loss (optional): the mean squared log-sum-exp of the router logits, which keeps them small.
"""
from typing import Dict, Optional

import gin
import jax
import jax.numpy as jnp
from jax.scipy import stats

EPS = 1e-9


def _cv_squared(x: jax.Array) -> jax.Array:
  return jnp.var(x) / (jnp.mean(x) ** 2 + EPS)


def importance_loss(probs: jax.Array, valid: jax.Array) -> jax.Array:
  """probs [T, E], valid [T] -> CV^2 of per-expert importance."""
  return _cv_squared(jnp.sum(probs * valid[:, None], axis=0))


def load_loss(logits: jax.Array, noisy_logits: jax.Array, valid: jax.Array, top_k: int,
              noise_std: float) -> jax.Array:
  """logits, noisy_logits [T, E] -> CV^2 of the experts' expected loads (0 without router noise)."""
  if noise_std <= 0:
    return jnp.zeros((), jnp.float32)
  e = logits.shape[-1]
  # The k-th largest noisy logit among the *other* experts: a token takes expert e when logit_e + noise beats it.
  kth = jax.lax.top_k(noisy_logits, min(top_k + 1, e))[0]
  threshold_if_in = kth[:, top_k] if top_k < e else jnp.full(kth.shape[:1], -jnp.inf)  # e was in the top k
  threshold_if_out = kth[:, top_k - 1]
  in_top = noisy_logits >= threshold_if_out[:, None]
  threshold = jnp.where(in_top, threshold_if_in[:, None], threshold_if_out[:, None])
  chance = stats.norm.cdf((logits - threshold) / noise_std)
  return _cv_squared(jnp.sum(chance * valid[:, None], axis=0))


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
  return -jnp.sum(p * jnp.log(p + EPS), axis=axis)


def local_entropy_loss(probs: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over valid tokens of H(p_token)."""
  return jnp.sum(_entropy(probs) * valid) / jnp.maximum(jnp.sum(valid), 1)


def global_entropy_loss(probs: jax.Array, valid: jax.Array, threshold: float) -> jax.Array:
  """max(0, threshold - H(mean over valid tokens of p))."""
  mean = jnp.sum(probs * valid[:, None], axis=0) / jnp.maximum(jnp.sum(valid), 1)
  return jnp.maximum(0.0, threshold - _entropy(mean))


def z_loss(logits: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over valid tokens of logsumexp(logits)^2."""
  return jnp.sum(jax.nn.logsumexp(logits, axis=-1) ** 2 * valid) / jnp.maximum(jnp.sum(valid), 1)


@gin.configurable(module="limoe")
def aux_weights(importance: float = 0.005, load: float = 0.005, local_entropy: float = 0.0,
                global_entropy: float = 0.0, global_entropy_threshold: Optional[float] = None,
                z_loss: float = 0.0) -> Dict[str, float]:
  """The weights of the auxiliary losses. global_entropy_threshold defaults to log(experts) / 2 (in nats)."""
  return {"importance": importance, "load": load, "local_entropy": local_entropy, "global_entropy": global_entropy,
          "global_entropy_threshold": global_entropy_threshold, "z_loss": z_loss}


def contrastive_loss(image_embeddings: jax.Array, text_embeddings: jax.Array, log_temperature: jax.Array):
  """Symmetric InfoNCE over the batch's pairs; embeddings are L2-normalised [B, D]. Returns (loss, accuracy)."""
  # [b, d] x [b, d] -> [b, b]
  logits = jnp.einsum("id,td->it", image_embeddings, text_embeddings) * jnp.exp(log_temperature)
  labels = jnp.arange(logits.shape[0])
  image_to_text = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
  text_to_image = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
  return 0.5 * (image_to_text + text_to_image), accuracy
