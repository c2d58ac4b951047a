"""Every command shown in the README and docs/ (in ```bash blocks) is parsed here as the real command would parse
it: its flags by the subcommand's own argparse parser, its gin files and overrides by gin (so a renamed parameter
or a missing file fails here), `make` targets against the Makefile. Nothing runs, so commands for pods and
clusters are checked the same way; the demo's and CI's own commands run in CI itself."""
import glob
import os
import re
import runpy
import shlex
import sys

import pytest

from benchmarks import gpu_suite
from shardline.launch import cli
from shardline.launch import gin_config
from shardline.launch import plan_inputs
from tests import helpers

DOCUMENTS = [os.path.join(helpers.REPO, "README.md")] + sorted(glob.glob(os.path.join(helpers.REPO, "docs", "*.md")))
# Programs that are not shardline's; the lines that call them are shown for the reader, not checked here.
EXTERNAL = ("tensorboard", "xprof", "tfds", "gcloud", "pip", "python3 -m pip", "apt", "sudo", "until", "cd", "git",
            "export", "d=$(mktemp", "bash benchmarks/gpu_suite.sh", "curl")


def _commands(path):
  """(line number, command) of every command in the document's ```bash blocks, continuation lines joined."""
  found, block, start, pending = [], False, 0, ""
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.startswith("```"):
        block = line.strip() == "```bash" and not block
        continue
      if not block:
        continue
      text = line.split(" # ")[0].rstrip() if not pending else line.rstrip()
      if not pending:
        start = number
      if text.endswith("\\"):
        pending += text[:-1] + " "
        continue
      command = (pending + text).strip()
      pending = ""
      if command and not command.startswith("#"):
        found.append((start, command))
  return found


COMMANDS = [(os.path.relpath(path, helpers.REPO), number, command)
            for path in DOCUMENTS for number, command in _commands(path)]


def _check_gin(argv):
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
  if not files:
    return
  bindings = [gin_config.override_to_binding(a[len("--gin."):]) for a in argv if a.startswith("--gin.")]
  bindings += [a.split("=", 1)[1] for a in argv if a.startswith("--gin_bindings=")]
  gin_config.parse(files, bindings, allow_missing=plan_inputs.PLAN_NEEDS_NO)


def _check_shardline(argv):
  if argv[0] in ("launch-local", "slurm") or argv[:1] == ["tpu"]:
    inner = argv[argv.index("--") + 1:] if "--" in argv else []
    if argv[0] == "tpu" and inner:
      inner = ["train", *inner]
    if inner:
      _check_shardline(inner)
  with gpu_suite.stop_after_parsing(), pytest.raises((gpu_suite.Parsed, SystemExit)) as stopped:
    cli.main(argv)  # the launchers parse their own flags, before `--`, and stop there
  if stopped.type is SystemExit:
    assert stopped.value.code in (0, None), f"shardline {' '.join(argv)}: argparse refused it"
  if argv[0] in ("train", "eval", "infer", "plan", "data"):
    _check_gin(argv)


def _check_python_module(argv):
  module, args = argv[2], argv[3:]
  with gpu_suite.stop_after_parsing(), pytest.raises((gpu_suite.Parsed, SystemExit)) as stopped:
    saved = sys.argv
    sys.argv = [module, *args]
    try:
      runpy.run_module(module, run_name="__main__")
    finally:
      sys.argv = saved
  if stopped.type is SystemExit:
    assert stopped.value.code in (0, None), f"python -m {module}: argparse refused {args}"
  _check_gin(args)


def _make_targets():
  with open(os.path.join(helpers.REPO, "Makefile")) as f:
    return set(re.findall(r"^([\w-]+):", f.read(), re.M))


def test_the_documents_show_commands():
  assert len(COMMANDS) > 20
  assert any(c.startswith("shardline plan") for _, _, c in COMMANDS)


@pytest.mark.parametrize("where, number, command", COMMANDS, ids=[f"{w}:{n}" for w, n, _ in COMMANDS])
def test_the_command_parses(where, number, command):
  del where, number
  if command.startswith(EXTERNAL):
    return
  argv = shlex.split(command)
  if argv[0] == "make":
    assert set(argv[1:]) <= _make_targets(), f"no such make target in {argv[1:]}"
  elif argv[0] == "shardline":
    _check_shardline(argv[1:])
  elif argv[:2] == ["python", "-m"] and argv[2].startswith("benchmarks."):
    _check_python_module(argv)
  elif argv[:2] == ["python", "-m"] and argv[2].startswith("shardline.launch."):
    _check_shardline([argv[2].rsplit(".", 1)[1], *argv[3:]])
  else:
    pytest.fail(f"not a command this test knows how to check: {command!r}; add it to EXTERNAL if it is not "
                "shardline's")


def test_the_rename_table_in_docs_lists_every_renamed_gin_name():
  from shardline.training.loop.settings import RENAMED  # pylint: disable=g-import-not-at-top
  with open(os.path.join(helpers.REPO, "docs", "gin.md")) as f:
    text = f.read().split("## Renamed gin names", 1)[1]
  shown = {}
  for old_names, new in re.findall(r"^\| ([^|]+) \| `([\w.]+)`", text, re.M):
    for old in re.findall(r"`([\w.]+)`", old_names):
      shown[old] = new
  assert shown == RENAMED
