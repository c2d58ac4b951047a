"""`shardline tpu`: the gcloud commands that run shardline on a Cloud TPU pod, one multi-slice or single slice.

  shardline tpu create  --name run1 --project P --zone us-central2-b --accelerator v4-1024 [--num_slices 2]
  shardline tpu wait    --name run1 ...          # until the queued resource is ACTIVE
  shardline tpu install --name run1 ...          # build a source archive here, copy it to every worker,
                                                 # install libjpeg-turbo's headers there and pip install [tpu]
  shardline tpu train   --name run1 ... -- --gin_file=experiments/vit22b_pod_v4.gin --gin.MODEL_DIR="'gs://b/r'"
  shardline tpu logs    --name run1 ...          # stream worker 0's log
  shardline tpu delete  --name run1 ...

`--dry_run` prints the commands instead of running them. Each argument is quoted for the remote shell and
again for the local one, so --gin.X="'string'" arrives intact; gin overrides are also checked here first, so an
unquoted string fails before the pod is paid for. With --num_slices N the queued resource holds N slices named
<name>-0 .. <name>-{N-1}; the TPU runtime gives jax the multi-slice (DCN) environment, and a mesh gin file with
dcn_* axes spreads the model across slices.
"""
import argparse
import dataclasses
import importlib.metadata
import shlex
import subprocess
import sys
import time
from typing import List, Sequence

from shardline.launch import reporting
from shardline.launch import gin_config
from shardline.launch import quoting
from shardline.core.errors import UserError

LOG = "~/shardline.log"
# What a worker needs to compile the loader's partial JPEG decoder (Ubuntu, as the TPU VM runtimes).
BUILD_PACKAGES = ("gcc", "python3-dev", "libjpeg-turbo8-dev")
DEFAULT_RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite",
                   "v6e": "v2-alpha-tpuv6e"}


@dataclasses.dataclass(frozen=True)
class Pod:
  """A queued resource of one or more TPU slices."""
  name: str
  project: str
  zone: str
  accelerator: str = "v4-8"
  runtime: str = ""
  num_slices: int = 1

  @property
  def nodes(self) -> List[str]:
    return [self.name] if self.num_slices == 1 else [f"{self.name}-{i}" for i in range(self.num_slices)]

  def _where(self) -> List[str]:
    return [f"--project={self.project}", f"--zone={self.zone}"]

  def create(self) -> List[List[str]]:
    runtime = self.runtime or DEFAULT_RUNTIME.get(self.accelerator.split("-")[0], "tpu-ubuntu2204-base")
    command = ["gcloud", "compute", "tpus", "queued-resources", "create", self.name, *self._where(),
               f"--accelerator-type={self.accelerator}", f"--runtime-version={runtime}"]
    if self.num_slices == 1:
      command.append(f"--node-id={self.name}")
    else:
      command += [f"--node-count={self.num_slices}", f"--node-prefix={self.name}"]
    return [command]

  def describe(self) -> List[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.name, *self._where(),
            "--format=value(state.state)"]

  def _ssh(self, node: str, remote: str, worker: str = "all") -> List[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *self._where(), f"--worker={worker}",
            f"--command={remote}"]

  def install(self, sdist: str) -> List[List[str]]:
    """Builds a source archive (shardline has a C extension, so a wheel built here would only install on this
    platform), copies it to every worker, and installs it there, compiling the loader's partial JPEG decoder
    against libjpeg-turbo's and Python's headers, which it installs first; each worker says if the decoder did not
    build (the loader then decodes whole JPEGs)."""
    build = [sys.executable, "-m", "build", "--sdist", "--outdir=dist", "."]
    commands = [build]
    packages = " ".join(BUILD_PACKAGES)
    headers = (f"sudo apt-get update -qq && sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 {packages} || "
               f'echo "shardline: could not install {packages}"')
    check = ('python3 -c "import shardline.data._jpeg_window" 2>/dev/null || echo "shardline: the partial JPEG '
             'decoder was not built on this worker; the loader will decode whole JPEGs (slower)"')
    for node in self.nodes:
      commands.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", sdist, f"{node}:~/", *self._where(),
                       "--worker=all"])
      remote_sdist = '"$HOME"/' + shlex.quote(sdist.rsplit("/", 1)[-1] + "[tpu]")
      commands.append(self._ssh(node, f"{{ {headers}; }} && python3 -m pip install --upgrade {remote_sdist} && "
                                      f"{{ {check}; }}"))
    return commands

  def train(self, shardline_args: Sequence[str]) -> List[List[str]]:
    remote = f"nohup {quoting.join(['shardline', 'train', *shardline_args])} > {LOG} 2>&1 &"
    return [self._ssh(node, remote) for node in self.nodes]

  def logs(self) -> List[List[str]]:
    return [self._ssh(self.nodes[0], f"tail -n +1 -f {LOG}", worker="0")]

  def delete(self) -> List[List[str]]:
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", self.name, *self._where(), "--force",
             "--quiet"]]


def check_overrides(shardline_args: Sequence[str]) -> None:
  """Parses every --gin.X=Y locally (the unquoted-string mistake fails here, not on the pod)."""
  for arg in shardline_args:
    if arg.startswith("--gin."):
      gin_config.override_to_binding(arg[len("--gin."):])


def wait(pod: Pod, timeout: float, poll: float = 30.0) -> None:
  """Polls the queued resource until it is ACTIVE."""
  deadline = time.time() + timeout
  while True:
    state = subprocess.run(pod.describe(), capture_output=True, text=True, check=True).stdout.strip()
    print(f"{pod.name}: {state}", flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise UserError(f"Queued resource {pod.name} is {state}; see `{quoting.join(pod.describe()[:-1])}`.")
    if time.time() > deadline:
      raise UserError(f"Queued resource {pod.name} is still {state} after {timeout:.0f}s; wait longer with "
                      "--timeout, or delete it.")
    time.sleep(poll)


def main(argv: Sequence[str] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)

  def run():
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="shardline tpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("create", "wait", "install", "train", "logs", "delete"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--zone", required=True)
    parser.add_argument("--accelerator", default="v4-8", help="e.g. v4-1024, v5p-256, v5litepod-64, v6e-256")
    parser.add_argument("--runtime", default="", help="TPU VM runtime; a default per generation")
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument("--sdist", default="", help="install: the source archive to copy (default: built into dist/)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="wait: seconds before giving up")
    parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    args = parser.parse_args(argv[:split])
    pod = Pod(args.name, args.project, args.zone, args.accelerator, args.runtime, args.num_slices)
    extra = argv[split + 1:]
    if args.action == "train":
      if not extra:
        raise UserError("shardline tpu train needs the train flags after --, e.g. -- --gin_file=experiments/x.gin")
      check_overrides(extra)
    if args.action == "wait":
      commands = [pod.describe()]
    elif args.action == "install":
      commands = pod.install(args.sdist or f"dist/shardline-{importlib.metadata.version('shardline')}.tar.gz")
    elif args.action == "train":
      commands = pod.train(extra)
    else:
      commands = getattr(pod, args.action)()
    if args.dry_run:
      for command in commands:
        print(quoting.join(command))
      return 0
    if args.action == "wait":
      wait(pod, args.timeout)
      return 0
    for command in commands:
      print("+ " + quoting.join(command), flush=True)
      subprocess.run(command, check=True)
    return 0
  return reporting.run_reporting_user_errors(run)
