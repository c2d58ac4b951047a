"""Every GPU check and benchmark, in stages within one time budget, ending with one table of every figure.

  bash benchmarks/gpu_suite.sh OUT_DIR [--budget 450] [--stages env,moe,...]   on the GPU machine (installs first)
  python -m benchmarks.gpu_suite --out OUT_DIR [--budget 450] [--stages ...]     the stages alone
  python -m benchmarks.gpu_suite --rehearse                                      here, on the CPU: see below
  python -m benchmarks.gpu_suite --list                                          the stages and their budgets

The GPU machine has JAX but not this project's data libraries; benchmarks/gpu_requirements.txt lists the
packages that travel to it as wheels. Stages run in the order of STAGES (most wanted first), each in its own
process with its own log (--work, by default /tmp/shardline_gpu_suite: logs/<stage>.log), its own time limit,
and never past the suite's budget: a stage whose expected time no longer fits is skipped and named, so a second
call can run it with --stages. After every stage OUT_DIR holds four files, few enough for the device call to
bring back: summary.md (every figure so far in one table, and each stage's status), summary.json, logs.tgz (the
logs) and traces.tgz (each experiment's profiled steps, jax.profiler's trace-event files), so a call cut short
still returns what it measured. The training-step stages also trace two steps and print the ops that took the
most time (training/planning/trace_summary.py) into their logs.

--rehearse runs here, on the CPU, what can go wrong before any GPU work: every stage's imports, its flags and
its gin files (the model is built; nothing compiles), with the packages the GPU machine lacks hidden from
Python (benchmarks/rehearsal/sitecustomize.py). The synthetic-batch stages also run without the carried data
libraries and OpenCV, which they must not need; the end-to-end stage sees the carried wheels' packages, as on
the machine. It takes seconds and `make test` runs it (tests/benchmarks/test_gpu_suite.py).
"""
import argparse
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(REPO, "benchmarks", "gpu_requirements.txt")
HIDER = os.path.join(REPO, "benchmarks", "rehearsal")
# What shardline imports somewhere that the GPU machine lacks and that does not travel (no stage may need it).
NOT_ON_GPU_MACHINE = ("tensorflow", "tensorflow_datasets", "seqio", "ale_py", "gcsfs", "s3fs", "boto3", "botocore",
                      "moto", "xprof", "tensorboard_plugin_profile", "libtpu")
# Not needed by a benchmark on synthetic batches, so hidden from those stages even where the machine has it.
NOT_FOR_SYNTHETIC_BATCHES = ("cv2",)
EXPERIMENT_STEPS = ("--steps=10", "--warmup=2")
WORK_DIR = os.path.join(tempfile.gettempdir(), "shardline_gpu_suite")
TAR_LIMIT_BYTES = 15 << 20  # a file that comes back from the device call holds at most 16 MiB


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage: `python -m <argv...>` in its own process.

  Attributes:
    name: the stage's name (--stages, the log's name).
    what: what it measures, for --list and the summary.
    argv: the module and its arguments; '{profiles}' becomes the stage's profile folder.
    expect_s: the seconds it is expected to take on an H100/H200 (2026-11-22 logs: compile times plus the
      timed work); it is skipped when less than half of that is left of the budget.
    limit_s: the most it may take.
    kind: how its log is read (`figures`): 'env', 'pytest', 'attention', 'moe', 'train_step', 'e2e',
      'flops_check', 'ablations'; 'tuning' logs are kept, not read.
    gin: the gin files its argv names are parsed (and the model built) in the rehearsal.
    data: it reads the prepared JPEGs with the carried data libraries (the end-to-end run).
    env: extra environment variables.
  """
  name: str
  what: str
  argv: Tuple[str, ...]
  expect_s: float
  limit_s: float
  kind: str
  gin: bool = False
  data: bool = False
  env: Tuple[Tuple[str, str], ...] = ()


def _experiment(name: str, gin_file: str, what: str, expect_s: float, *extra: str) -> Stage:
  return Stage(name, what, ("benchmarks.train_step", f"--gin_file={gin_file}", *EXPERIMENT_STEPS,
                            "--profile_dir={profiles}", *extra), expect_s, 240, "train_step", gin=True)


STAGES = (
    Stage("env", "device, driver, jax and package versions; which carried packages import", ("benchmarks.gpu_suite",
          "--report_env"), 10, 60, "env"),
    Stage("kernels", "the Pallas kernels and ragged_dot compiled natively against their references",
          ("pytest", "-q", "-p", "no:cacheprovider", "-n", "8", "-rs", "tests/kernels/test_gpu_native.py"), 60, 180,
          "pytest", env=(("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),)),
    Stage("moe", "MoE layer: one-hot einsum, grouped pallas/ragged/xla, dispatch alone, dense; 8/32/64 experts",
          ("benchmarks.moe_layer",), 50, 150, "moe"),
    Stage("attention", "attention fwd+bwd: pallas vs cudnn vs xla at 256/576/1024/8192, causal 8192, MGDT 156",
          ("benchmarks.attention",), 50, 150, "attention"),
    _experiment("vit22b", "experiments/vit22b_slice_h100.gin", "ViT-22B-width slice, 8 layers, batch 32", 60),
    _experiment("limoe", "experiments/limoe_b16_gpu.gin", "LIMoE-B/16, batch 256", 75),
    _experiment("mgdt", "experiments/mgdt_200m_gpu.gin", "MGDT-200M, batch 128", 35),
    _experiment("metnet2", "experiments/metnet2_large_gpu.gin", "MetNet-2 large, batch 8", 55),
    Stage("e2e", "shardline train of a ViT-B/16 on prepared JPEGs (grain, checkpoints, eval) vs synthetic batches",
          ("benchmarks.train_e2e", "--gin_file=benchmarks/gpu_e2e.gin", "--steps=60"), 75, 200, "e2e", gin=True,
          data=True),
    _experiment("vit22b_b64", "experiments/vit22b_slice_h100.gin", "ViT-22B-width slice, 8 layers, batch 64", 65,
                "--gin.BATCH_SIZE=64"),
)
# Not in the default run (about 8 minutes of the 15 a session has): ask for them by name.
EXTRA_STAGES = (
    Stage("flops", "the FLOP counter against hand counts", ("benchmarks.flops_check",), 30, 120, "flops_check"),
    Stage("tuning", "the attention kernels' block/warp/stage sweep", ("benchmarks.attention_tuning",), 240, 330,
          "tuning"),
    Stage("ablations", "ViT-22B ablations", ("benchmarks.ablations", "--gin_file=experiments/vit22b_slice_h100.gin",
                                             *EXPERIMENT_STEPS), 240, 540, "ablations", gin=True),
)


def carried_packages() -> Dict[str, str]:
  """{distribution: import name} of benchmarks/gpu_requirements.txt (each line says `# imports as NAME`)."""
  found = {}
  with open(REQUIREMENTS) as f:
    for line in f:
      match = re.match(r"^([A-Za-z0-9_.-]+)==\S+\s+# imports as (\w+)", line)
      if match:
        found[match.group(1)] = match.group(2)
  return found


def hidden_packages(stage: Stage) -> List[str]:
  """What the rehearsal hides from a stage: what the machine lacks, and for synthetic batches what travels but
  they must not need (gin aside)."""
  if stage.data:
    return list(NOT_ON_GPU_MACHINE)
  carried = [name for name in carried_packages().values() if name != "gin"]
  return list(NOT_ON_GPU_MACHINE) + carried + list(NOT_FOR_SYNTHETIC_BATCHES)


# ----------------------------------------------------------------------------------------------- reading logs

def tables(text: str) -> List[Dict[str, str]]:
  """Every row of every markdown table in `text`, as {column header: cell}."""
  rows, header = [], None
  for line in text.splitlines():
    if not line.startswith("|"):
      header = None
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if header is None:
      header = cells
    elif not all(set(c) <= set("-: ") for c in cells):
      rows.append(dict(zip(header, cells)))
  return rows


def figures(stage: Stage, text: str) -> List[Tuple[str, str]]:
  """(figure, value) pairs read from a stage's log."""
  rows = tables(text)
  if stage.kind == "env":
    return [(r["item"], r["value"]) for r in rows if "item" in r]
  if stage.kind == "pytest":
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|errors?)\b.*?) in [\d.]+s", text, re.M)
    return [("native kernel tests", found[-1] if found else "no pytest summary line")]
  if stage.kind == "moe":
    out = [(f"{r['layer']}, {r['experts']} experts", f"{r['step ms']} ms; vs one-hot {r['vs one-hot']}, vs dense "
            f"{r['vs dense']}, dispatch share {r['dispatch share']}") for r in rows
           if "layer" in r and r["layer"] != "grouped dispatch only" and r["experts"] != "-"]
    out += [(f"grouped dispatch alone, {r['experts']} experts", f"{r['step ms']} ms") for r in rows
            if r.get("layer") == "grouped dispatch only"]
    fastest = re.findall(r"^# fastest grouped implementation by experts: (.*)$", text, re.M)
    return out + ([("fastest grouped matmul", fastest[-1])] if fastest else [])
  if stage.kind == "attention":
    by_shape: Dict[str, Dict[str, str]] = {}
    for r in rows:
      if "impl" in r and "fwd+bwd ms" in r:
        by_shape.setdefault(r["shape"], {})[r["impl"]] = r["fwd+bwd ms"]
    out = []
    for shape, ms in by_shape.items():
      ratio = (f"; pallas vs cudnn {float(ms['cudnn']) / float(ms['pallas']):.2f}x"
               if _number(ms.get("cudnn")) and _number(ms.get("pallas")) else "")
      out.append((f"attention {shape} fwd+bwd", ", ".join(f"{k} {v} ms" for k, v in ms.items()) + ratio))
    return out
  if stage.kind in ("train_step", "e2e", "flops_check", "ablations"):
    out = []
    for r in rows:
      if "MFU" in r and "ms/step" in r and "run" in r:
        out.append((f"{stage.name} step", f"{r['ms/step']} ms, {r['examples/s']} examples/s, MFU {r['MFU']}, "
                    f"peak {r['peak memory']}"))
      elif "images/s" in r:
        out.append((r["run"], f"{r['images/s']} images/s, vs synthetic {r['vs synthetic']}, data wait "
                    f"{r['data-wait share']}, eval accuracy {r['eval accuracy']}, checkpoints {r['checkpoints']}"))
      elif "ratio" in r and "program" in r:
        out.append((f"FLOP count, {r['program']}", f"ratio {r['ratio']}"))
      elif "variant" in r:
        out.append((f"ablation: {r['variant']}", f"{r['ms/step']} ms, {r['MFU']}"))
    top = re.search(r"^# top \d+ of \d+ XLA ops by time: ([\d.]+) ms.*\n.*\n.*\n\| ([^|]+) \|[^|]*\|[^|]*\|[^|]*\| "
                    r"([^|]+) \|", text, re.M)
    if top:
      out.append((f"{stage.name} profile", f"{top.group(1)} ms of ops per step; top op {top.group(2).strip()} "
                  f"({top.group(3).strip()})"))
    return out
  return []


def _number(value: Optional[str]) -> bool:
  try:
    return value is not None and float(value) > 0
  except ValueError:
    return False


# ----------------------------------------------------------------------------------------------- running

def _stage_command(stage: Stage, profiles: str) -> List[str]:
  argv = [a.replace("{profiles}", profiles) for a in stage.argv]
  return [sys.executable, "-m", *argv]


def _run_stage(stage: Stage, work: str, seconds: float) -> Tuple[str, float]:
  """Runs the stage within `seconds`; returns (status, seconds taken). The log goes to work/logs/<stage>.log."""
  os.makedirs(os.path.join(work, "logs"), exist_ok=True)
  env = dict(os.environ, PYTHONUNBUFFERED="1", **dict(stage.env))
  start = time.time()
  with open(os.path.join(work, "logs", f"{stage.name}.log"), "w") as log:
    # A process group of its own, so that a stage cut at its limit takes its workers (pytest, grain) with it.
    process = subprocess.Popen(_stage_command(stage, os.path.join(work, "profiles", stage.name)), cwd=REPO,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
      code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, 9)
      process.wait()
      return f"cut at its limit of {seconds:.0f} s", time.time() - start
  return ("ok" if code == 0 else f"failed (exit {code})"), time.time() - start


def _write_summary(out: str, work: str, results: List[Dict]) -> str:
  lines = ["| stage | status | seconds | what |", "|---|---|---|---|"]
  lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.0f} | {r['what']} |" for r in results]
  lines += ["", "| stage | figure | value |", "|---|---|---|"]
  lines += [f"| {r['stage']} | {name} | {value} |" for r in results for name, value in r["figures"]]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(results, f, indent=1)
  for name, folder, pattern in (("logs.tgz", "logs", ".log"), ("traces.tgz", "profiles", ".trace.json.gz")):
    _pack(out, work, name, folder, pattern)
  return text


def _pack(out: str, work: str, name: str, folder: str, suffix: str) -> None:
  """out/name: a tar of the files ending in `suffix` under work/folder, up to TAR_LIMIT_BYTES of them (what
  comes back from the device call is limited per file); a file that would pass the limit is left out."""
  if not os.path.isdir(os.path.join(work, folder)):
    return
  total = 0
  with tarfile.open(os.path.join(out, name), "w:gz") as tar:
    for root, _, files in sorted(os.walk(os.path.join(work, folder))):
      for file in sorted(f for f in files if f.endswith(suffix)):
        path = os.path.join(root, file)
        size = os.path.getsize(path)
        if total + size > TAR_LIMIT_BYTES:
          print(f"# {name}: {os.path.relpath(path, work)} left out (past {TAR_LIMIT_BYTES >> 20} MiB)", flush=True)
          continue
        total += size
        tar.add(path, os.path.relpath(path, work))


def run(out: str, stages: Sequence[Stage], budget: float, work: str = WORK_DIR) -> List[Dict]:
  """Runs the stages in order within `budget` seconds, logs and profiles in `work`; writes the summary and the
  packed logs to `out`, and prints the summary, after each stage."""
  os.makedirs(out, exist_ok=True)
  results, start, text = [], time.time(), ""
  for stage in stages:
    left = budget - (time.time() - start)
    if left < stage.expect_s / 2:
      status, seconds, found = f"skipped: {left:.0f} s left of the budget, expects {stage.expect_s:.0f} s", 0.0, []
    else:
      print(f"=== {stage.name} ({stage.what}); limit {min(stage.limit_s, left):.0f} s", flush=True)
      status, seconds = _run_stage(stage, work, min(stage.limit_s, left))
      with open(os.path.join(work, "logs", f"{stage.name}.log"), errors="replace") as f:
        found = figures(stage, f.read())
    results.append({"stage": stage.name, "what": stage.what, "status": status, "seconds": seconds,
                    "figures": found})
    print(f"=== {stage.name}: {status} after {seconds:.0f} s", flush=True)
    for name, value in found:
      print(f"  {name}: {value}", flush=True)
    text = _write_summary(out, work, results)
  print(text, flush=True)
  return results


# ----------------------------------------------------------------------------------------------- the rehearsal

class Parsed(Exception):
  """Raised once a script's argparse has parsed its flags: the rehearsal runs nothing after that."""


@contextlib.contextmanager
def stop_after_parsing():
  """Within it, any argparse parser raises Parsed (holding its result) as soon as it has parsed its flags; the
  rehearsal and tests/test_docs_commands.py use it to check a command's flags without running it."""
  original = argparse.ArgumentParser.parse_known_args

  def parse_known_args(self, args=None, namespace=None):
    raise Parsed(original(self, args, namespace))

  argparse.ArgumentParser.parse_known_args = parse_known_args
  try:
    yield
  finally:
    argparse.ArgumentParser.parse_known_args = original


def _rehearse_stage(stage: Stage) -> str:
  """Imports the stage's module, parses its flags, and for gin stages parses its gin and builds its model."""
  import importlib  # pylint: disable=g-import-not-at-top
  import runpy  # pylint: disable=g-import-not-at-top
  if stage.kind == "pytest":
    importlib.import_module(stage.argv[-1][:-3].replace("/", "."))
    return "test module imported"
  if stage.kind == "env":
    report_env()
    return "versions reported"
  argv = [a.replace("{profiles}", "/tmp/unused") for a in stage.argv]
  saved = sys.argv
  sys.argv = argv
  try:
    with stop_after_parsing():
      runpy.run_module(argv[0], run_name="__main__")
  except Parsed:
    pass
  finally:
    sys.argv = saved
  if not stage.gin:
    return "imported, flags parsed"
  from shardline.launch import flags, gin_config, plan_inputs  # pylint: disable=g-import-not-at-top
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
  bindings = flags.split_gin_overrides(argv)[1]
  if stage.data:  # `shardline train` parses strictly: every module of its gin files must import
    gin_config.parse(files, bindings + ["MODEL_DIR = '/tmp/unused'"])
    for module in ("shardline.data.image_decode", "shardline.data.workers", "tensorboardX", "array_record"):
      importlib.import_module(module)
  else:
    gin_config.parse(files, bindings, allow_missing=plan_inputs.PLAN_NEEDS_NO, allow_missing_data_libraries=True)
  model, batch_size = plan_inputs.plan_run()[:2]
  return f"imported, flags and gin parsed, {type(model).__name__} at batch {batch_size} built"


def _rehearse_in_this_process(names: Sequence[str]) -> bool:
  """Rehearses the named stages here (the packages are already hidden); True if all pass."""
  ok = True
  for stage in [s for s in STAGES + EXTRA_STAGES if s.name in names]:
    try:
      print(f"rehearsed {stage.name}: {_rehearse_stage(stage)}", flush=True)
    except Exception as e:  # pylint: disable=broad-except  (every stage is tried, each failure named)
      ok = False
      print(f"FAILED {stage.name}: {type(e).__name__}: {e}", flush=True)
  return ok


def rehearse(stages: Sequence[Stage], also_hidden: Sequence[str] = ()) -> bool:
  """Rehearses the stages on this CPU in two processes (synthetic-batch stages, data stages), each with the
  packages hidden that the GPU machine lacks; True if every stage passes."""
  ok = True
  for data in (False, True):
    group = [s for s in stages if s.data == data]
    if not group:
      continue
    hidden = hidden_packages(group[0]) + list(also_hidden)
    env = dict(os.environ, JAX_PLATFORMS="cpu", SHARDLINE_HIDE_PACKAGES=",".join(hidden),
               PYTHONPATH=os.pathsep.join([HIDER, REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    print(f"# hidden: {', '.join(hidden)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--rehearse_here",
                             ",".join(s.name for s in group)], cwd=REPO, env=env)
    ok = ok and result.returncode == 0
  return ok


# ----------------------------------------------------------------------------------------------- the env stage

def report_env() -> None:
  """Prints the device, the driver, the versions and which packages of the requirements import."""
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  rows = [("device", f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")]
  with contextlib.suppress(OSError, subprocess.SubprocessError):
    smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    rows.append(("driver, memory, max SM clock", smi.stdout.strip() or smi.stderr.strip()))
  rows.append(("python", sys.version.split()[0]))
  for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "cv2", "PIL",
               *carried_packages().values()):
    try:
      module = importlib.import_module(name)
      rows.append((name, getattr(module, "__version__", "imported")))
    except ImportError as e:
      rows.append((name, f"missing ({e})"))
  print("| item | value |\n|---|---|")
  for item, value in rows:
    print(f"| {item} | {value} |")


def main(argv: Sequence[str] = None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=None, help="where the summary and the packed logs and traces go")
  parser.add_argument("--work", default=WORK_DIR, help="where the logs and traces are written")
  parser.add_argument("--budget", type=float, default=450.0, help="seconds for all stages together")
  parser.add_argument("--stages", default=None, help="comma-separated stages (default: all of --list's first part)")
  parser.add_argument("--list", action="store_true", help="print the stages and exit")
  parser.add_argument("--rehearse", action="store_true", help="check every stage's set-up on this CPU")
  parser.add_argument("--also_hide", default="", help="rehearse with these packages hidden too (tests)")
  parser.add_argument("--rehearse_here", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--report_env", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  known = {s.name: s for s in STAGES + EXTRA_STAGES}
  wanted = args.stages.split(",") if args.stages else [s.name for s in STAGES]
  unknown = [name for name in wanted if name not in known]
  if unknown:
    parser.error(f"unknown stage(s) {', '.join(unknown)}; --list shows them")
  stages = [known[name] for name in wanted]
  if args.list:
    for s in STAGES + EXTRA_STAGES:
      print(f"{s.name:12s} {s.expect_s:4.0f} s expected, {s.limit_s:4.0f} s at most: {s.what}"
            + ("" if s in STAGES else " (on request)"))
  elif args.report_env:
    report_env()
  elif args.rehearse_here is not None:
    sys.exit(0 if _rehearse_in_this_process(args.rehearse_here.split(",")) else 1)
  elif args.rehearse:
    sys.exit(0 if rehearse(stages, [n for n in args.also_hide.split(",") if n]) else 1)
  elif not args.out:
    parser.error("--out is needed to run the stages (or --rehearse, or --list)")
  else:
    results = run(args.out, stages, args.budget, args.work)
    sys.exit(0 if all(r["status"] == "ok" for r in results) else 1)


if __name__ == "__main__":
  main()
