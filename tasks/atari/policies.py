"""Behaviour policies of mixed quality, so that the dataset's returns spread from beginner to decent.

  * random: uniform over the 18 actions;
  * sticky-random: keeps its previous action with probability 0.8;
  * scripted heuristics: Pong and Breakout move the paddle toward the ball (read from the game's RAM), Freeway
    walks up, Enduro accelerates while weaving, RoadRunner runs left while weaving; Boxing closes in and punches
    and SpaceInvaders fires while drifting, but those two score no better than random (see README), so the
    default games leave them out;
  * epsilon-mixtures: the heuristic with probability 1 - epsilon, else random.
Actions use ALE's full action set: 0 NOOP, 1 FIRE, 2 UP, 3 RIGHT, 4 LEFT, 5 DOWN, 10 UPFIRE, 11 RIGHTFIRE,
12 LEFTFIRE, ...
"""
from typing import Callable, Dict, Optional

import numpy as np

NOOP, FIRE, UP, RIGHT, LEFT, DOWN = 0, 1, 2, 3, 4, 5
UPLEFT, DOWNLEFT = 7, 9
UPFIRE, RIGHTFIRE, LEFTFIRE = 10, 11, 12


def _pong(ram: np.ndarray, rng) -> int:
  paddle, ball = int(ram[51]), int(ram[54])  # the player's paddle and the ball, vertical positions
  if ball == 0:
    return FIRE
  return LEFT if ball > paddle + 8 else RIGHT if ball < paddle - 2 else NOOP  # LEFT: down, RIGHT: up


def _breakout(ram: np.ndarray, rng) -> int:
  paddle, ball = int(ram[72]), int(ram[99])
  if ball == 0:
    return FIRE
  return RIGHT if ball > paddle + 12 else LEFT if ball < paddle + 4 else NOOP


def _freeway(ram: np.ndarray, rng) -> int:
  return UP


def _enduro(ram: np.ndarray, rng) -> int:
  return int(rng.choice([FIRE, FIRE, RIGHTFIRE, LEFTFIRE]))  # FIRE accelerates


def _road_runner(ram: np.ndarray, rng) -> int:
  return int(rng.choice([LEFT, LEFT, UPLEFT, DOWNLEFT]))  # run from the coyote, picking up seeds


def _boxing(ram: np.ndarray, rng) -> int:
  dx, dy = int(ram[33]) - int(ram[32]), int(ram[35]) - int(ram[34])  # opponent minus player
  if abs(dx) < 30 and abs(dy) < 10:
    return FIRE
  return int(rng.choice([RIGHTFIRE if dx > 0 else LEFTFIRE, DOWN if dy > 0 else UP]))


def _space_invaders(ram: np.ndarray, rng) -> int:
  return int(rng.choice([FIRE, RIGHTFIRE, LEFTFIRE]))


HEURISTICS: Dict[str, Callable] = {"Pong": _pong, "Breakout": _breakout, "Freeway": _freeway, "Enduro": _enduro,
                                   "RoadRunner": _road_runner, "Boxing": _boxing, "SpaceInvaders": _space_invaders}
KINDS = ("random", "sticky_random", "heuristic", "epsilon_0.3", "epsilon_0.6")


class Policy:
  """A behaviour policy for one game: act(ram) -> action."""

  def __init__(self, kind: str, game: str, rng: np.random.Generator):
    if kind not in KINDS:
      raise ValueError(f"Unknown policy {kind!r}; choose one of {KINDS}.")
    self.kind, self.game, self.rng = kind, game, rng
    self.previous: Optional[int] = None

  def act(self, ram: np.ndarray) -> int:
    if self.kind == "random":
      action = int(self.rng.integers(18))
    elif self.kind == "sticky_random":
      keep = self.previous is not None and self.rng.random() < 0.8
      action = self.previous if keep else int(self.rng.integers(18))
    else:
      epsilon = 0.0 if self.kind == "heuristic" else float(self.kind.split("_")[1])
      action = (int(self.rng.integers(18)) if self.rng.random() < epsilon
                else HEURISTICS[self.game](ram, self.rng))
    self.previous = action
    return action
