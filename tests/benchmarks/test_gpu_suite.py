"""The GPU suite (benchmarks/gpu_suite.py) here, on the CPU: its rehearsal with the GPU machine's packages (every
stage gets past its imports, flags and gin), the requirements file it reads, the figures it reads from real H100
logs, and its budget."""
import os
import subprocess
import sys
import tarfile

import pytest

from benchmarks import gpu_suite
from tests import helpers

H100_LOGS = os.path.join(helpers.REPO, "benchmarks", "results", "h100_20261122")


def _suite(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", *args], capture_output=True, text=True,
                        timeout=timeout, env=helpers.subprocess_env(), cwd=helpers.REPO)


@pytest.mark.full
def test_every_stage_gets_past_imports_and_gin_without_the_missing_packages():
  result = _suite("--rehearse")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for stage in gpu_suite.STAGES:
    assert f"rehearsed {stage.name}: " in result.stdout, result.stdout
  assert "# hidden: tensorflow, tensorflow_datasets, seqio" in result.stdout
  assert "grain" in result.stdout.splitlines()[0] and "cv2" in result.stdout.splitlines()[0]  # synthetic stages


def test_the_rehearsal_fails_a_stage_that_needs_a_hidden_package():
  result = _suite("--rehearse", "--stages", "moe,mgdt,kernels", "--also_hide", "flax")
  assert result.returncode != 0
  for stage in ("moe", "mgdt", "kernels"):
    assert f"FAILED {stage}: ModuleNotFoundError: No module named 'flax'" in result.stdout, result.stdout


def test_the_requirements_are_pinned_and_say_what_they_import():
  with open(gpu_suite.REQUIREMENTS) as f:
    lines = [line for line in f if line.strip() and not line.startswith("#")]
  carried = gpu_suite.carried_packages()
  assert len(carried) == len(lines) and carried["gin-config"] == "gin" and carried["grain"] == "grain"
  e2e = next(s for s in gpu_suite.STAGES if s.name == "e2e")
  vit = next(s for s in gpu_suite.STAGES if s.name == "vit22b")
  assert not set(carried.values()) & set(gpu_suite.hidden_packages(e2e))
  assert set(gpu_suite.hidden_packages(vit)) >= set(carried.values()) - {"gin"}


def _figures(stage_name, log):
  stage = next(s for s in gpu_suite.STAGES if s.name == stage_name)
  with open(os.path.join(H100_LOGS, log)) as f:
    return dict(gpu_suite.figures(stage, f.read()))


def test_figures_are_read_from_the_h100_logs():
  attention = _figures("attention", "attention.log")
  assert attention["attention vit22b-256 fwd+bwd"] == ("cudnn 0.866 ms, xla 1.265 ms, pallas 0.753 ms; "
                                                       "pallas vs cudnn 1.15x")
  assert attention["attention mgdt-156 fwd+bwd"] == "xla 1.017 ms, pallas 0.737 ms"
  assert _figures("limoe", "limoe_b16.log")["limoe step"] == ("127.1 ms, 2014.6 examples/s, MFU 19.7%, peak "
                                                             "26.5 GiB")
  assert _figures("kernels", "native_kernel_tests.log") == {"native kernel tests": "19 passed, 55 warnings"}


def test_stages_share_one_budget_and_every_one_is_reported(tmp_path):
  quick = gpu_suite.Stage("quick", "lists the stages", ("benchmarks.gpu_suite", "--list"), 1, 60, "env")
  slow = gpu_suite.Stage("slow", "sleeps past its limit", ("timeit", "-n1", "-r1", "import time; time.sleep(60)"),
                         1, 2, "env")
  too_big = gpu_suite.Stage("too_big", "expects more than is left", ("benchmarks.gpu_suite", "--list"), 10_000,
                            60, "env")
  results = gpu_suite.run(str(tmp_path / "out"), [quick, slow, too_big], budget=120, work=str(tmp_path / "work"))
  assert [r["status"] for r in results][:2] == ["ok", "cut at its limit of 2 s"]
  assert results[2]["status"].startswith("skipped: ") and "expects 10000 s" in results[2]["status"]
  assert sorted(os.listdir(tmp_path / "out")) == ["logs.tgz", "summary.json", "summary.md"]  # few files come back
  summary = (tmp_path / "out" / "summary.md").read_text()
  assert "| quick | ok |" in summary and "| too_big | skipped: " in summary
  with tarfile.open(tmp_path / "out" / "logs.tgz") as tar:
    assert sorted(tar.getnames()) == ["logs/quick.log", "logs/slow.log"]
  with open(tmp_path / "work" / "logs" / "quick.log") as f:
    assert "vit22b_b64" in f.read()


@pytest.mark.full
def test_the_end_to_end_stage_trains_on_prepared_jpegs_without_the_missing_packages(tmp_path):
  """benchmarks.gpu_data prepares JPEGs here; benchmarks.train_e2e then trains a tiny ViT on them with the packages
  the GPU machine lacks hidden, as its stage would there."""
  data = tmp_path / "jpegs"
  prepared = subprocess.run([sys.executable, "-m", "benchmarks.gpu_data", f"--out={data}", "--train=48",
                             "--test=16"], capture_output=True, text=True, timeout=600, cwd=helpers.REPO,
                            env=helpers.subprocess_env())
  assert prepared.returncode == 0, prepared.stderr[-3000:]
  e2e = next(s for s in gpu_suite.STAGES if s.name == "e2e")
  env = helpers.subprocess_env({"SHARDLINE_HIDE_PACKAGES": ",".join(gpu_suite.hidden_packages(e2e)),
                                "PYTHONPATH": os.pathsep.join([gpu_suite.HIDER, helpers.REPO])})
  tiny = ["--gin.vit22b.ViT22BConfig.width=32", "--gin.vit22b.ViT22BConfig.depth=2",
          "--gin.vit22b.ViT22BConfig.mlp_dim=64", "--gin.vit22b.ViT22BConfig.num_heads=2",
          "--gin.vit22b.ViT22BConfig.head_dim=16", "--gin.IMAGE_SIZE=64", "--gin.BATCH_SIZE=16",
          "--gin.stream.workers=2", "--gin.train.log_every=2", "--gin.train.eval_every=6",
          "--gin.train.checkpoint_every=3", "--gin.vit22b.ViT22BConfig.dtype='float32'"]
  result = subprocess.run([sys.executable, "-m", "benchmarks.train_e2e", f"--model_dir={tmp_path / 'run'}",
                           "--steps=6", "--synthetic_steps=2", f"--gin.benchmarks.prepared_jpegs.directory='{data}'",
                           *tiny], capture_output=True, text=True, timeout=900, cwd=helpers.REPO, env=env)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
  figures = dict(gpu_suite.figures(e2e, result.stdout))
  assert figures["shardline train, prepared JPEGs"].endswith("checkpoints 2")  # steps 3 and 6
  assert "data wait " in figures["shardline train, prepared JPEGs"] and "eval accuracy 0." in figures[
      "shardline train, prepared JPEGs"]
