"""Generated commands: gcloud for TPU pods and sbatch for SLURM, exact, and quoted so shells give back exactly
the arguments meant (T5X's most common mistake is the quoting of --gin.X="'string'")."""
import subprocess

import pytest

from shardline.launch import quoting
from shardline.launch import slurm_script
from shardline.launch import tpu
from shardline.core.errors import UserError

TRAIN = ["--gin_file=experiments/vit22b_pod_v4.gin", "--gin.MODEL_DIR='gs://bucket/run 1'", "--gin.train.steps=100",
         "--gin.NOTE='it\"s $HOME `x`'"]
POD = tpu.Pod("run1", "proj", "us-central2-b", "v4-1024", num_slices=2)


def bash_split(command_line: str):
  """The argv a real shell makes of a command line (shlex is not a full POSIX shell: it keeps \\$ as is)."""
  out = subprocess.run(["bash", "-c", f"printf '%s\\0' {command_line}"], capture_output=True, check=True).stdout
  return out.decode().split("\0")[:-1]


@pytest.mark.parametrize("arg", ["plain", "--gin.MODEL_DIR='gs://b/r'", "a b", "it's", 'say "hi"', "$HOME",
                                 "`cmd`", "back\\slash", "--command=nohup x > ~/log 2>&1 &", "", "--f="])
def test_quoting_round_trips(arg):
  assert bash_split(quoting.join(["cmd", arg])) == ["cmd", arg]


def test_quoting_is_readable():
  assert quoting.join(["--gin.MODEL_DIR='gs://b/r'"]) == "--gin.MODEL_DIR=\"'gs://b/r'\""
  assert quoting.join(["--gin.train.steps=100", "x.gin"]) == "--gin.train.steps=100 x.gin"


def test_tpu_create_delete_and_logs_commands():
  assert [quoting.join(c) for c in POD.create()] == [
      "gcloud compute tpus queued-resources create run1 --project=proj --zone=us-central2-b "
      "--accelerator-type=v4-1024 --runtime-version=tpu-ubuntu2204-base --node-count=2 --node-prefix=run1"]
  single = tpu.Pod("one", "proj", "zone-a", "v5p-256")
  assert quoting.join(single.create()[0]) == (
      "gcloud compute tpus queued-resources create one --project=proj --zone=zone-a --accelerator-type=v5p-256 "
      "--runtime-version=v2-alpha-tpuv5 --node-id=one")
  assert quoting.join(POD.delete()[0]) == (
      "gcloud compute tpus queued-resources delete run1 --project=proj --zone=us-central2-b --force --quiet")
  assert quoting.join(POD.logs()[0]) == (
      "gcloud compute tpus tpu-vm ssh run1-0 --project=proj --zone=us-central2-b --worker=0 "
      "--command='tail -n +1 -f ~/shardline.log'")
  assert POD.describe()[-1] == "--format=value(state.state)"


def test_tpu_train_command_on_every_slice_and_quoting_survives_two_shells():
  commands = POD.train(TRAIN)
  assert [c[5] for c in commands] == ["run1-0", "run1-1"]
  assert quoting.join(POD.train(TRAIN[:3])[0]) == (
      "gcloud compute tpus tpu-vm ssh run1-0 --project=proj --zone=us-central2-b --worker=all "
      "--command=\"nohup shardline train --gin_file=experiments/vit22b_pod_v4.gin "
      "--gin.MODEL_DIR=\\\"'gs://bucket/run 1'\\\" --gin.train.steps=100 > ~/shardline.log 2>&1 &\"")
  local_argv = bash_split(quoting.join(commands[0]))  # what the local shell hands to gcloud
  assert local_argv == commands[0]
  remote = local_argv[-1][len("--command="):]
  command, redirect = remote.rsplit(" > ", 1)
  assert redirect == "~/shardline.log 2>&1 &"
  assert bash_split(command) == ["nohup", "shardline", "train", *TRAIN]  # what the worker's shell runs


def test_tpu_install_commands():
  commands = POD.install("dist/shardline-0.1.0.tar.gz")
  assert quoting.join(commands[0]).endswith("-m build --sdist --outdir=dist .")
  assert quoting.join(commands[1]) == ("gcloud compute tpus tpu-vm scp dist/shardline-0.1.0.tar.gz run1-0:~/ "
                                       "--project=proj --zone=us-central2-b --worker=all")
  remote = commands[2][-1][len("--command="):]
  assert remote == (
      '{ sudo apt-get update -qq && sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 gcc python3-dev '
      'libjpeg-turbo8-dev || echo "shardline: could not install gcc python3-dev libjpeg-turbo8-dev"; } && '
      "python3 -m pip install --upgrade \"$HOME\"/'shardline-0.1.0.tar.gz[tpu]' && "
      '{ python3 -c "import shardline.data._jpeg_window" 2>/dev/null || echo "shardline: the partial JPEG decoder '
      'was not built on this worker; the loader will decode whole JPEGs (slower)"; }')
  assert bash_split(quoting.join(commands[2]))[-1] == f"--command={remote}"  # through the local shell intact
  assert len(commands) == 5  # build, then copy and install on each of the two slices


def test_unquoted_gin_string_is_caught_before_the_pod():
  with pytest.raises(UserError, match="is not a gin literal"):
    tpu.check_overrides(["--gin.MODEL_DIR=gs://bucket/run"])
  tpu.check_overrides(TRAIN)


@pytest.mark.parametrize("per, tasks, gpus_per_task", [("gpu", 8, "--gpus-per-task=1 "), ("node", 1, "")])
def test_slurm_script(per, tasks, gpus_per_task):
  script = slurm_script.render(["train", "--gin_file=experiments/x.gin", "--gin.MODEL_DIR='/scratch/run'"],
                               nodes=4, gpus_per_node=8, per=per, job_name="vit", time="02:00:00",
                               setup="source ~/venv/bin/activate", extra_sbatch=["--partition=gpu"])
  lines = script.splitlines()
  assert lines[0] == "#!/bin/bash"
  for expected in ("#SBATCH --job-name=vit", "#SBATCH --nodes=4", f"#SBATCH --ntasks-per-node={tasks}",
                   "#SBATCH --gpus-per-node=8", "#SBATCH --time=02:00:00", "#SBATCH --output=shardline-%j.log",
                   "#SBATCH --partition=gpu", "set -euo pipefail", "source ~/venv/bin/activate"):
    assert expected in lines, expected
  srun = (f"srun --kill-on-bad-exit=1 {gpus_per_task}shardline train --gin_file=experiments/x.gin "
          "--gin.MODEL_DIR=\"'/scratch/run'\"")
  assert lines[-1] == srun
  assert bash_split(srun)[-1] == "--gin.MODEL_DIR='/scratch/run'"


def test_slurm_refuses_bad_counts():
  with pytest.raises(UserError):
    slurm_script.render(["train"], nodes=0, gpus_per_node=8, per="gpu")
