"""A physically motivated radar simulator for nowcasting, deterministic for a seed.

Rain cells live on a periodic `domain` x `domain` grid (pixels of a few km, frames a few minutes apart). Each
frame they are
  * advected semi-Lagrangianly by a large-scale wind that turns and changes speed in time: the wind at frame t
    is w0 + a * (cos(2 pi t / period + phase), sin(...)), the same over the domain;
  * grown or decayed by the local moisture and instability, and rained out where heavy:
    rate *= exp(growth * (humidity * instability - 0.45) - saturation * rate);
  * diffused (a Gaussian blur) and perturbed by multiplicative noise;
  * joined by new cells that initiate where the air is moist and unstable.
Humidity and instability are smooth random fields carried along by the same wind. The numerical-weather-model
state handed to the forecaster is, at the forecast time: the wind (u, v), its tendency (change per 10 frames),
humidity and instability. Extrapolating the radar alone cannot know that the wind will turn or which cells will
grow, so the state channels carry information that matters most at long lead times, as HRRR does for MetNet-2.

An example cuts a `context` window from the domain's centre: the last `input_frames` radar frames and the state
at the forecast time over the whole context, and the radar at each lead time over the central `target` window.
"""
import dataclasses
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

STATE_CHANNELS = ("u_wind", "v_wind", "u_tendency", "v_tendency", "humidity", "instability")
TENDENCY_FRAMES = 10  # tendencies are given as the change over 10 frames, so that they are of order 1


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
  """Geometry and physics of the simulated radar.

  Attributes:
    domain: side of the simulated periodic grid (pixels); larger than the context, so rain enters unseen.
    context, target: sides of the input and target windows, centred in the domain.
    input_frames: radar frames up to and including the forecast time.
    lead_times: frames after the forecast time at which targets are given.
    mean_speed, wind_swing: pixels per frame of the steady wind and of its rotating part.
    wind_period: frames per turn of the rotating part.
    growth: growth rate per frame at the most favourable moisture and instability.
    saturation: decay per frame per mm/h, which caps the rate where growth and decay balance (about 8 mm/h).
    initiation_rate: expected new cells per frame over the domain.
    noise: std of the multiplicative log-normal noise per frame.
    spin_up: frames simulated before the first input frame.
  """
  domain: int = 96
  context: int = 64
  target: int = 32
  input_frames: int = 4
  lead_times: Tuple[int, ...] = (1, 3, 6, 12)
  mean_speed: float = 1.0
  wind_swing: float = 1.0
  wind_period: float = 30.0
  growth: float = 0.25
  saturation: float = 0.02
  initiation_rate: float = 1.5
  noise: float = 0.05
  spin_up: int = 8

  def __post_init__(self):
    if not self.target <= self.context <= self.domain:
      raise ValueError(f"Need target <= context <= domain, got {self.target}, {self.context}, {self.domain}.")
    if not self.lead_times or min(self.lead_times) < 1:
      raise ValueError(f"lead_times must be positive frame counts, got {self.lead_times}.")


def _smooth_field(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
  """A smooth periodic random field scaled to [0, 1]."""
  field = ndimage.gaussian_filter(rng.normal(size=(n, n)), sigma, mode="wrap")
  return (field - field.min()) / (field.max() - field.min() + 1e-9)


def _advect(fields: np.ndarray, u: float, v: float) -> np.ndarray:
  """Semi-Lagrangian step for a uniform wind: out[y, x] = in[y - v, x - u], bilinear and periodic, over the
  last two axes."""
  iy, ix = int(np.floor(v)), int(np.floor(u))
  fy, fx = v - iy, u - ix
  rolled = lambda dy, dx: np.roll(fields, (iy + dy, ix + dx), axis=(-2, -1))
  return ((1 - fy) * (1 - fx) * rolled(0, 0) + fy * (1 - fx) * rolled(1, 0) + (1 - fy) * fx * rolled(0, 1)
          + fy * fx * rolled(1, 1))


def _new_cells(rng, n: int, favourable: np.ndarray, expected: float) -> np.ndarray:
  """Gaussian rain cells placed where `favourable` is high; peak rates 2-12 mm/h, radii 2-5 pixels."""
  field = np.zeros((n, n))
  cdf = np.cumsum(favourable.ravel() ** 4)
  for _ in range(rng.poisson(expected)):
    y, x = np.unravel_index(min(np.searchsorted(cdf, rng.random() * cdf[-1]), n * n - 1), (n, n))
    radius, peak = rng.uniform(2, 5), rng.uniform(2, 12)
    dy = (np.arange(n) - y + n // 2) % n - n // 2
    dx = (np.arange(n) - x + n // 2) % n - n // 2
    field += peak * np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * radius ** 2))
  return field


def wind(config: SimulatorConfig, params: Dict[str, float], t: float) -> Tuple[float, float]:
  """(u, v) in pixels per frame at frame t."""
  angle = 2 * np.pi * t / config.wind_period + params["phase"]
  return (params["u0"] + config.wind_swing * np.cos(angle), params["v0"] + config.wind_swing * np.sin(angle))


def simulate(config: SimulatorConfig, seed: int) -> Dict[str, np.ndarray]:
  """One example: 'radar' [input_frames, context, context] mm/h, 'state' [6, context, context] and 'target'
  [leads, target, target] mm/h; also 'frames' (every frame over the domain) and 'winds' for checks."""
  rng = np.random.default_rng(seed)
  n = config.domain
  heading = rng.uniform(0, 2 * np.pi)
  params = {"u0": config.mean_speed * np.cos(heading), "v0": config.mean_speed * np.sin(heading),
            "phase": rng.uniform(0, 2 * np.pi)}
  humidity, instability = _smooth_field(rng, n, 8.0), _smooth_field(rng, n, 12.0)
  rain = _new_cells(rng, n, humidity * instability, 6)
  total = config.spin_up + config.input_frames + max(config.lead_times)
  frames, winds, now_state = [], [], None
  now = config.spin_up + config.input_frames - 1  # the forecast time
  for t in range(total):
    u, v = wind(config, params, t)
    winds.append((u, v))
    if t == now:
      u_next, v_next = wind(config, params, t + 1)
      tendency = TENDENCY_FRAMES * np.array([u_next - u, v_next - v])
      now_state = np.stack([np.full((n, n), u), np.full((n, n), v), np.full((n, n), tendency[0]),
                            np.full((n, n), tendency[1]), humidity, instability])
    frames.append(rain)
    favourable = humidity * instability
    rain, humidity, instability = _advect(np.stack([rain, humidity, instability]), u, v)
    rate = config.growth * (favourable - 0.45) - config.saturation * rain  # heavy rain rains itself out
    rain = rain * np.exp(rate + config.noise * rng.normal(size=(n, n)))
    rain = ndimage.gaussian_filter(rain, 0.5, mode="wrap")
    rain = rain + _new_cells(rng, n, favourable, config.initiation_rate)
    rain = np.clip(np.where(rain < 0.05, 0.0, rain), 0.0, 100.0)
  frames = np.stack(frames)
  c0, t0 = (n - config.context) // 2, (n - config.target) // 2
  ctx, tgt = slice(c0, c0 + config.context), slice(t0, t0 + config.target)
  return {
      "radar": frames[now - config.input_frames + 1:now + 1, ctx, ctx].astype(np.float32),
      "state": now_state[:, ctx, ctx].astype(np.float32),
      "target": np.stack([frames[now + lead, tgt, tgt] for lead in config.lead_times]).astype(np.float32),
      "frames": frames.astype(np.float32),
      "winds": np.array(winds, np.float32),
  }
