"""Real Atari games through ALE (ale-py ships the ROMs), with the standard preprocessing.

  * sticky actions: ALE repeats the previous action with probability 0.25 at every frame;
  * frame-skip 4: an agent step repeats its action for 4 frames, summing the rewards, and observes the
    pixel-wise maximum of the last two frames (which removes sprite flicker);
  * grayscale, resized to 84 x 84 (area averaging);
  * the full 18-action space for every game, so one model plays them all;
  * episodes end at game over or after `max_steps` agent steps.
Everything is deterministic for a seed: ALE's own random generator (which drives the sticky actions) is seeded.
"""
import dataclasses
from typing import Tuple

import numpy as np
from PIL import Image

NUM_ACTIONS = 18
FRAME_SIZE = 84
FRAME_SKIP = 4
STICKY_ACTION_PROBABILITY = 0.25

# ROM names in ale-py for the games shardline uses by default.
ROMS = {"Breakout": "breakout", "Pong": "pong", "Freeway": "freeway", "Enduro": "enduro",
        "RoadRunner": "road_runner", "Boxing": "boxing", "SpaceInvaders": "space_invaders"}


def _ale():
  import ale_py  # pylint: disable=g-import-not-at-top
  from ale_py import roms  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (loads ale_py.roms)
  ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
  return ale_py


@dataclasses.dataclass
class AtariEnv:
  """One game. reset() -> observation; step(action) -> (observation, reward, done)."""
  game: str
  seed: int
  max_steps: int = 500

  def __post_init__(self):
    if self.game not in ROMS:
      raise ValueError(f"Unknown game {self.game!r}; shardline knows {', '.join(ROMS)}.")
    ale_py = _ale()
    self.ale = ale_py.ALEInterface()
    self.ale.setInt("random_seed", int(self.seed) % (2 ** 31))
    self.ale.setFloat("repeat_action_probability", STICKY_ACTION_PROBABILITY)
    self.ale.loadROM(ale_py.roms.get_rom_path(ROMS[self.game]))
    self.actions = self.ale.getLegalActionSet()  # all 18, in the standard order
    self.steps = 0

  def _observe(self, previous: np.ndarray) -> np.ndarray:
    frame = np.maximum(previous, self.ale.getScreenGrayscale())
    return np.asarray(Image.fromarray(frame).resize((FRAME_SIZE, FRAME_SIZE), Image.BOX), np.uint8)

  def reset(self) -> np.ndarray:
    self.ale.reset_game()
    self.steps = 0
    screen = self.ale.getScreenGrayscale()
    return self._observe(screen)

  def ram(self) -> np.ndarray:
    return self.ale.getRAM()

  def step(self, action: int) -> Tuple[np.ndarray, float, bool]:
    reward, previous = 0.0, None
    for i in range(FRAME_SKIP):
      if i == FRAME_SKIP - 1:
        previous = self.ale.getScreenGrayscale()
      reward += self.ale.act(self.actions[int(action)])
      if self.ale.game_over():
        break
    if previous is None:
      previous = self.ale.getScreenGrayscale()
    self.steps += 1
    done = self.ale.game_over() or self.steps >= self.max_steps
    return self._observe(previous), reward, done
