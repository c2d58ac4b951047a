"""Imports go one way between the top-level folders and between the rooms of training/ (README, Architecture):
any import, at module level or inside a function, that goes against the arrows fails here, so no cycle can come
back."""
import pytest

from tests import import_graph

# folder -> the folders its modules may import (besides itself).
ALLOWED = {
    "core": set(),
    "kernels": {"core"},
    "partitioning": {"core", "kernels"},
    "models": {"core", "kernels", "partitioning"},
    "data": {"core"},
    "tasks": {"core", "data"},
    "training": {"core", "kernels", "partitioning", "models", "data", "tasks"},
    "launch": {"core", "kernels", "partitioning", "models", "data", "tasks", "training"},
    "benchmarks": {"core", "kernels", "partitioning", "models", "data", "tasks", "training", "launch"},
}
# room of training/ -> the rooms and the folders it may import (training/__init__.py says why).
ROOMS = {
    "lifecycle": ({"core", "partitioning"}, set()),
    "state": ({"core", "models", "partitioning"}, set()),
    "transfer": ({"core", "models", "partitioning"}, {"state", "lifecycle"}),
    "evaluation": ({"core", "models", "partitioning", "data", "tasks"}, {"state", "lifecycle"}),
    "planning": ({"core", "models", "partitioning", "kernels"}, {"state", "transfer"}),
    "loop": ({"core", "models", "partitioning", "data", "tasks"},
             {"state", "lifecycle", "transfer", "evaluation", "planning"}),
}


def _folder(module: str) -> str:
  return module.split(".")[1]


def _room(module: str) -> str:
  parts = module.split(".")
  return parts[2] if len(parts) > 3 and parts[1] == "training" else ""


def _violations():
  found = []
  for module, imported in sorted(import_graph.edges().items()):
    folder, room = _folder(module), _room(module)
    for target in sorted(imported):
      target_folder, target_room = _folder(target), _room(target)
      if target_folder == folder and folder != "training":
        continue
      if folder == "training" and target_folder == "training":
        if not room or not target_room or target_room == room or target_room in ROOMS[room][1]:
          continue
        found.append(f"{module} -> {target} (room {room} may import {sorted(ROOMS[room][1]) or 'no other room'})")
      elif folder == "training" and room and target_folder not in ROOMS[room][0]:
        found.append(f"{module} -> {target} (room {room} may import {sorted(ROOMS[room][0])})")
      elif target_folder not in ALLOWED[folder]:
        found.append(f"{module} -> {target} ({folder}/ may import {sorted(ALLOWED[folder]) or 'nothing else'})")
  return found


def test_imports_go_one_way():
  assert import_graph.edges(), "no sources found"
  assert _violations() == []


def test_the_allowed_directions_have_no_cycle():
  order = []
  pending = dict(ALLOWED)
  while pending:
    ready = [folder for folder, needs in pending.items() if needs <= set(order)]
    assert ready, f"a cycle among {sorted(pending)}"
    order.extend(sorted(ready))
    for folder in ready:
      del pending[folder]


@pytest.mark.parametrize("module, target", [("shardline.data.sources", "shardline.tasks.registry"),
                                            ("shardline.training.state.step", "shardline.training.transfer.distill")])
def test_the_check_catches_a_backward_import(monkeypatch, module, target):
  real = import_graph.edges()
  monkeypatch.setattr(import_graph, "edges", lambda: {**real, module: {target}})
  assert any(v.startswith(f"{module} -> {target}") for v in _violations())
