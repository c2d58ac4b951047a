"""The forecasts MetNet-2 is judged against, computed in the same evaluator.

  * persistence: the last radar frame, unchanged;
  * advection extrapolation: the last frame moved semi-Lagrangianly along the motion observed in the radar, as
    pysteps-style extrapolation nowcasts do. The motion is one vector per example (the best-correlated shift
    between the first and last input frames, refined to sub-pixel by a parabola through the peak), which is
    exact for a large-scale wind and holds it constant over the forecast;
  * climatology: each example's distribution of rain rates over its whole context and input frames, the same
    forecast at every pixel and lead time.
"""
import jax
import jax.numpy as jnp


def _centre(x: jax.Array, target: int) -> jax.Array:
  margin = (x.shape[-1] - target) // 2
  return x[..., margin:margin + target, margin:margin + target]


def persistence(radar: jax.Array, target: int) -> jax.Array:
  """radar [b, t, c, c] -> [b, target, target]: the last frame over the target window."""
  return _centre(radar[:, -1], target)


def _refine(left: jax.Array, mid: jax.Array, right: jax.Array) -> jax.Array:
  """Sub-pixel offset of a peak from a parabola through three neighbouring scores."""
  denominator = left - 2 * mid + right
  return jnp.clip(jnp.where(jnp.abs(denominator) > 1e-12, 0.5 * (left - right) / denominator, 0.0), -0.5, 0.5)


def motion(radar: jax.Array, search: int = 8) -> jax.Array:
  """[b, t, c, c] -> [b, 2] pixels per frame (dy, dx): the displacement (up to `search` pixels) that best
  matches the first input frame to the last one, by normalised correlation over the interior, refined to
  sub-pixel."""
  c = radar.shape[-1]
  shifts = jnp.arange(-search, search + 1)
  inner = c - 2 * search

  def one(frames):
    first, last = jnp.log1p(frames[0]), jnp.log1p(frames[-1])
    target = last[search:search + inner, search:search + inner]

    def score(dy, dx):  # last[y, x] ~ first[y - dy, x - dx]
      window = jax.lax.dynamic_slice(first, (search - dy, search - dx), (inner, inner))
      return jnp.sum(window * target) / jnp.sqrt(jnp.sum(window * window) + 1e-6)  # cosine similarity
    scores = jax.vmap(lambda dy: jax.vmap(lambda dx: score(dy, dx))(shifts))(shifts)  # [2s+1, 2s+1]
    iy, ix = jnp.unravel_index(jnp.argmax(scores), scores.shape)
    at = lambda y, x: scores[jnp.clip(y, 0, 2 * search), jnp.clip(x, 0, 2 * search)]
    dy = shifts[iy] + _refine(at(iy - 1, ix), at(iy, ix), at(iy + 1, ix))
    dx = shifts[ix] + _refine(at(iy, ix - 1), at(iy, ix), at(iy, ix + 1))
    return jnp.stack([dy, dx]) / (frames.shape[0] - 1)
  return jax.vmap(one)(radar)


def advection(radar: jax.Array, lead: int, target: int) -> jax.Array:
  """[b, t, c, c] -> [b, target, target]: the last frame moved by lead x motion (bilinear; zero from outside
  the context)."""
  velocity = motion(radar)
  c = radar.shape[-1]
  yy, xx = jnp.meshgrid(jnp.arange(c, dtype=jnp.float32), jnp.arange(c, dtype=jnp.float32), indexing="ij")

  def one(frame, v):
    coords = [yy - lead * v[0], xx - lead * v[1]]
    return jax.scipy.ndimage.map_coordinates(frame, coords, order=1, mode="constant", cval=0.0)
  return _centre(jax.vmap(one)(radar[:, -1], velocity), target)


def climatology(radar: jax.Array, num_bins: int, bin_width: float) -> jax.Array:
  """[b, t, c, c] -> [b, bins]: each example's bin frequencies over its context and input frames."""
  bins = jnp.clip(jnp.floor(radar / bin_width), 0, num_bins - 1).astype(jnp.int32).reshape(radar.shape[0], -1)
  return jax.vmap(lambda row: jnp.bincount(row, length=num_bins))(bins) / bins.shape[1]
