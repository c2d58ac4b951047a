"""The Atari data: the environment and the generator are deterministic for a seed; episodes round-trip
through ArrayRecord; windows; a malformed record stops with a clear error; a split with no train or no validation
episodes stops before generating; every known game has a ROM, a scripted policy and published random and human
scores."""
import pickle

import numpy as np
import pytest

from shardline.core.errors import UserError
from shardline.tasks.atari import environment, episodes, generate, policies, task, windows
from shardline.training.evaluation import atari_play as play


def test_environment_is_deterministic_and_preprocessed():
  def rollout(seed):
    env = environment.AtariEnv("Breakout", seed, max_steps=30)
    frames, rewards, done = [env.reset()], [], False
    rng = np.random.default_rng(0)
    while not done:
      frame, reward, done = env.step(int(rng.integers(18)))
      frames.append(frame)
      rewards.append(reward)
    return np.stack(frames), rewards
  a, b, c = rollout(1), rollout(1), rollout(2)
  np.testing.assert_array_equal(a[0], b[0])
  assert a[0].shape == (31, 84, 84) and a[0].dtype == np.uint8
  assert len(environment.AtariEnv("Pong", 0).actions) == environment.NUM_ACTIONS
  assert not np.array_equal(a[0], c[0]) or a[1] != c[1]  # sticky actions follow the seed


def test_every_known_game_has_a_rom_a_scripted_policy_and_published_scores():
  for game in environment.ROMS:
    assert game in policies.HEURISTICS and game in play.RANDOM_SCORES and game in play.HUMAN_SCORES, game
    assert play.HUMAN_SCORES[game] > play.RANDOM_SCORES[game]
  assert set(generate.DEFAULT_GAMES) <= set(environment.ROMS)
  rng = np.random.default_rng(0)
  for game in generate.DEFAULT_GAMES:
    action = policies.Policy("heuristic", game, rng).act(np.zeros(128, np.uint8))
    assert 0 <= action < environment.NUM_ACTIONS


def test_generator_is_deterministic_and_round_trips_and_its_windows_are_read_directly(tmp_path):
  first_of = lambda game: list(episodes.read(episodes.path_for(str(tmp_path / "a"), game)))
  stats = generate.generate(str(tmp_path / "a"), games=("Freeway", "Pong"), episodes_per_game=3, max_steps=20)
  generate.generate(str(tmp_path / "b"), games=("Freeway", "Pong"), episodes_per_game=3, max_steps=20)
  for game in ("Freeway", "Pong"):
    first = first_of(game)
    second = list(episodes.read(episodes.path_for(str(tmp_path / "b"), game)))
    assert len(first) == 3
    for x, y in zip(first, second):
      for key in ("observations", "actions", "rewards", "returns_to_go"):
        np.testing.assert_array_equal(x[key], y[key])
      np.testing.assert_array_equal(x["returns_to_go"], np.cumsum(np.sign(x["rewards"])[::-1])[::-1])
    assert stats[game]["behaviour"]["episodes"] == 3
  assert [str(e["policy"]) for e in first] == ["random", "sticky_random", "heuristic"]
  source = windows.AtariWindows(str(tmp_path / "a"), ("Freeway", "Pong"), "train", k=4, stride=2,
                                validation_every=3)
  train = [source[i] for i in range(len(source))]
  assert train[0]["observations"].shape == (4, 84, 84) and {int(w["game"]) for w in train} == {0, 1}
  assert min(w["rewards"].min() for w in train) >= -1 and max(w["rewards"].max() for w in train) <= 1
  # episodes 0 and 1 of each game train (episode 2 is validation); windows start every 2 steps
  lengths = [len(e["actions"]) for game in ("Freeway", "Pong") for e in first_of(game)[:2]]
  assert len(source) == sum((n - 4) // 2 + 1 for n in lengths)
  pong = first_of("Pong")[1]
  last = source[len(source) - 1]  # Pong's episode 1, its last window
  start = (len(pong["actions"]) - 4) // 2 * 2
  np.testing.assert_array_equal(last["observations"], pong["observations"][start:start + 4])
  np.testing.assert_array_equal(last["rewards"], np.sign(pong["rewards"][start:start + 4]))
  batch = source.examples([len(source) - 1, 0, 1])  # each episode decoded once; the same windows
  np.testing.assert_array_equal(batch[0]["actions"], last["actions"])
  np.testing.assert_array_equal(batch[2]["returns_to_go"], train[1]["returns_to_go"])
  copy = pickle.loads(pickle.dumps(source))  # as a loader worker gets it
  np.testing.assert_array_equal(copy[3]["observations"], train[3]["observations"])
  validation = windows.AtariWindows(str(tmp_path / "a"), ("Freeway", "Pong"), "validation", 4, 2, 3)
  assert {int(validation[i]["game"]) for i in range(len(validation))} == {0, 1}
  with pytest.raises(UserError, match="no split 'test'"):
    windows.AtariWindows(str(tmp_path / "a"), ("Pong",), "test", 4, 2, 3)
  with pytest.raises(UserError, match="is 400 steps long"):
    windows.AtariWindows(str(tmp_path / "a"), ("Pong",), "train", 400, 2, 3)
  every = np.concatenate([e["returns_to_go"] for game in ("Freeway", "Pong")
                          for e in episodes.read(episodes.path_for(str(tmp_path / "a"), game))])
  assert task.returns_to_go_range(str(tmp_path / "a"), ("Freeway", "Pong")) == (every.min(), every.max())


def test_malformed_record_stops_with_a_clear_error(tmp_path):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "episodes-Pong.array_record")
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  writer.write(b"this is not an episode")
  writer.close()
  with pytest.raises(UserError, match=r"Malformed episode record 0 of .*episodes-Pong"):
    list(episodes.read(path))
  with pytest.raises(UserError, match="does not exist"):
    list(episodes.read(str(tmp_path / "episodes-Boxing.array_record")))


@pytest.mark.parametrize("episodes_per_game, validation_every", [(3, 5), (10, 1), (0, 5)])
def test_a_split_without_train_or_validation_episodes_stops_before_generating(tmp_path, episodes_per_game,
                                                                               validation_every):
  data_dir = tmp_path / "data"
  with pytest.raises(UserError, match="episodes_per_game >= validation_every"):
    task.atari_episodes(str(data_dir), games=("Pong",), episodes_per_game=episodes_per_game, max_steps=20,
                        validation_every=validation_every)
  assert not data_dir.exists()  # nothing generated
  with pytest.raises(UserError, match="at least one episode"):
    generate.generate(str(data_dir), games=("Pong",), episodes_per_game=0, max_steps=20)
  assert not data_dir.exists()
