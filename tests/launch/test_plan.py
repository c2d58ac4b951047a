"""`shardline plan`: ahead-of-time compiles against TPU topologies, the does-not-fit verdict, and golden
sharding summaries of the shipped pod experiments (a change in sharding shows up in review as a diff)."""
import os

import pytest

from shardline.launch import gin_config
from shardline.launch import plan as plan_cli
from shardline.launch import plan_inputs
from shardline.training.planning import planner as planning
from shardline.training.planning import targets
from tests import helpers

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
# Every shipped pod experiment and the slice it is meant for.
POD_EXPERIMENTS = {"vit22b_pod_v4": "v4-1024", "limoe_h14_pod_v5p": "v5p-256", "mgdt_200m_pod_v4": "v4-64",
                   "metnet2_paper_v3": "v3-128"}
# Quick plans (planning.QUICK_COMPILE_OPTIONS) moved memory by -7.8% to 0.0% against full-effort compiles of
# these experiments (BENCHMARKS.md); a pod experiment must fit with more headroom than that.
QUICK_PLAN_HEADROOM = 0.90


def _plan(experiment, topology, *overrides, quick=False):
  gin_config.parse([f"experiments/{experiment}.gin"], list(overrides), allow_missing=plan_inputs.PLAN_NEEDS_NO)
  inputs = plan_cli.plan_run()
  return planning.plan(inputs.model, inputs.batch_size, targets.resolve(topology), inputs.steps, inputs.microbatches,
                       quick=quick, distill=inputs.distill)


@pytest.mark.full
def test_tiny_plan_on_a_v4_slice():
  result = _plan("vit22b_tiny_digits_cpu8", "v4-8")  # v4-8: 4 chips, 8 TensorCore devices, as fsdp=4 x tensor=2
  assert result.fits and result.target.num_devices == 8
  assert result.temp_bytes is not None and result.flops_per_device > 0
  text = planning.report(result)
  assert "FITS" in text
  assert text.splitlines()[1].startswith("mesh fsdp=4 x tensor=2 (8 tpu devices) | rules fsdp_tensor")
  query = next(line for line in text.splitlines() if line.startswith("encoder/layers/query "))
  assert query.endswith("(None, 'fsdp', 'tensor', None)")  # embed over fsdp, heads over tensor


@pytest.mark.full
def test_a_distillation_plan_counts_the_teacher():
  alone = _plan("vit22b_small_digits_cpu8", "v4-8")
  distilled = _plan("vit22b_small_digits_distill_cpu8", "v4-8")
  teacher = 250_250 * 4 // 8  # the demo's ViT-22B tiny in float32, about an eighth per device (fsdp=4 x tensor=2)
  assert alone.teacher_bytes == 0 and 0.5 * teacher < distilled.teacher_bytes < 2 * teacher
  assert distilled.param_bytes == alone.param_bytes and distilled.opt_bytes == alone.opt_bytes
  assert distilled.flops_per_device > alone.flops_per_device  # the teacher's forward pass is in the step
  assert "  teacher " in planning.report(distilled) and "  teacher " not in planning.report(alone)


@pytest.mark.full
def test_vit22b_on_a_far_too_small_topology_does_not_fit():
  result = _plan("vit22b_pod_v4", "v4-8", "partitioning.make_mesh.ici_tensor = 2")
  assert not result.fits
  text = planning.report(result)
  assert "DOES NOT FIT" in text and "try a larger topology" in text
  assert result.param_bytes > 16 * 2 ** 30 / 2  # 22B float32 parameters over 8 devices: 10.9 GB each


@pytest.mark.full
def test_does_not_fit_exit_code(tmp_path):
  result = helpers.run_cli_in_process("plan", "--gin_file=experiments/vit22b_pod_v4.gin", "--topology=v4-8",
                                      "--gin.partitioning.make_mesh.ici_tensor=2")
  assert result.returncode == plan_cli.DOES_NOT_FIT, result.stderr[-2000:]
  assert "DOES NOT FIT" in result.stdout


@pytest.mark.full
@pytest.mark.parametrize("experiment", sorted(POD_EXPERIMENTS))
def test_pod_experiment_fits_and_matches_its_golden_sharding(experiment):
  result = _plan(experiment, POD_EXPERIMENTS[experiment], quick=True)
  print(planning.report(result).split("Memory per device:")[1])
  assert result.temp_bytes is not None  # compiled for the pod: activations counted, not only the state
  assert result.total_bytes <= QUICK_PLAN_HEADROOM * result.target.hbm_bytes, planning.report(result)
  golden = os.path.join(GOLDEN, f"{experiment}.txt")
  if os.environ.get("SHARDLINE_UPDATE_GOLDEN"):
    with open(golden, "w") as f:
      f.write(result.sharding_table + "\n")
  with open(golden) as f:
    assert result.sharding_table + "\n" == f.read(), (
        f"The sharding of {experiment} changed. If intended, regenerate the golden file with "
        "SHARDLINE_UPDATE_GOLDEN=1 and review the diff.")


@pytest.mark.full
def test_vit22b_batch_that_fits_only_with_microbatches():
  whole = _plan("vit22b_pod_v4", "v4-1024", "BATCH_SIZE = 65536", quick=True)
  assert not whole.fits, planning.report(whole)
  accumulated = _plan("vit22b_pod_v4", "v4-1024", "BATCH_SIZE = 65536", "MICROBATCHES = 4", quick=True)
  assert accumulated.fits and accumulated.accumulator_bytes > 0, planning.report(accumulated)
  assert accumulated.activation_bytes < whole.activation_bytes
  assert "accumulator" in planning.report(accumulated) and "4 microbatches" in planning.report(accumulated)
