"""The categorical output over precipitation-rate bins, and the scores computed from it.

Bins are [k w, (k+1) w) mm/h for k < num_bins - 1 and the last bin takes everything above. The first bin means
"no measurable rain" and puts its mass at 0 mm/h; every other bin spreads its probability uniformly, so the
forecast CDF is a step at 0 and then piecewise linear between bin edges. Observations above the top edge are
scored as the top edge.
"""
import jax
import jax.numpy as jnp


def to_bins(rate: jax.Array, num_bins: int, bin_width: float) -> jax.Array:
  """mm/h -> bin index (int32)."""
  return jnp.clip(jnp.floor(rate / bin_width), 0, num_bins - 1).astype(jnp.int32)


def exceedance(probs: jax.Array, threshold: float, bin_width: float) -> jax.Array:
  """P(rate >= threshold) from bin probabilities [..., bins]; threshold on a bin edge."""
  first = int(round(threshold / bin_width))
  return jnp.sum(probs[..., first:], axis=-1)


def crps(probs: jax.Array, observed: jax.Array, bin_width: float) -> jax.Array:
  """CRPS = integral of (F(x) - 1[x >= y])^2 dx for the CDF F of probs [..., bins] (see the module docstring)
  and observations y [...], in mm/h. Each bin splits at y into a part below (integrand F^2) and above
  ((1 - F)^2); the square of a linear function integrates to length x (p^2 + pq + q^2) / 3 of its end values."""
  k = probs.shape[-1]
  cdf = jnp.cumsum(probs, axis=-1)
  # F just above each bin's lower edge: the first bin's mass sits at 0, so F is already p_0 there.
  lo_cdf = jnp.concatenate([cdf[..., :1], cdf[..., :-1]], axis=-1)
  lower_edges = jnp.arange(k) * bin_width
  y = jnp.clip(observed, 0.0, k * bin_width)[..., None]
  s = jnp.clip((y - lower_edges) / bin_width, 0.0, 1.0)  # the share of each bin below y
  at_y = lo_cdf + (cdf - lo_cdf) * s
  square = lambda p, q: (p * p + p * q + q * q) / 3
  below = s * square(lo_cdf, at_y)
  above = (1 - s) * square(1 - at_y, 1 - cdf)
  return bin_width * jnp.sum(below + above, axis=-1)


def point_crps(forecast: jax.Array, observed: jax.Array, num_bins: int, bin_width: float) -> jax.Array:
  """CRPS of a deterministic forecast (a point mass), |x - y| on the same clipped scale as crps()."""
  top = num_bins * bin_width
  return jnp.abs(jnp.clip(forecast, 0, top) - jnp.clip(observed, 0, top))


def histogram(rates: jax.Array, num_bins: int, bin_width: float) -> jax.Array:
  """[n] rates -> [bins] empirical bin probabilities."""
  return jnp.bincount(to_bins(rates.reshape(-1), num_bins, bin_width), length=num_bins) / rates.size
