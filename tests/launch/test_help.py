"""Every `shardline` subcommand prints its help and exits 0 for --help, as a new user tries first."""
import pytest

from shardline.launch import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_prints_its_help(command, capsys):
  try:
    code = cli.main([command, "--help"])
  except SystemExit as e:  # argparse's own --help exits
    code = e.code
  out = capsys.readouterr().out
  assert code == 0
  assert out.startswith("usage: shardline") and command.split("-")[0] in out.split("\n")[0]


def test_the_top_level_help():
  assert cli.main(["--help"]) == 0
