#!/usr/bin/env bash
# Every GPU check and benchmark the issues name, in stages, for a GPU machine that has JAX but not this
# project's other dependencies (no internet, no TensorFlow): carry a gin-config wheel in .whl/ and run
#   bash benchmarks/gpu_suite.sh OUT_DIR STAGE [STAGE ...]
# from the repository root. Stages: env, kernels (native kernel tests), flops (the FLOP counter against hand
# counts), tuning (attention kernel sweep), attention, moe, vit22b, vit22b_xla, ablations,
# models (LIMoE, MGDT, MetNet-2 throughput). Each stage has its own time limit and log (OUT_DIR/STAGE.log), and
# a failing stage does not stop the next.
set -u
out=${1:?OUT_DIR}; shift
mkdir -p "$out" /tmp/shardline_site/shardline
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/shardline_site .whl/*.whl
fi
# shardline is a namespace package: each top-level folder is shardline.<folder> (setup.py).
for d in partitioning models kernels tasks training launch gin benchmarks; do
  ln -sfn "$PWD/$d" "/tmp/shardline_site/shardline/$d"
done
export PYTHONPATH="/tmp/shardline_site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
export SHARDLINE_COMPILATION_CACHE=/tmp/shardline_xla

stage() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start))s"
  grep -E "^\||^#|passed|failed|error|Error" "$out/$name.log" | grep -v "^#.*WARNING" | tail -40
}

for s in "$@"; do
  case $s in
    env) stage env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv;
         python3 -c "import jax, jaxlib, flax, optax; print(\"# jax\", jax.__version__, \"jaxlib\", jaxlib.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__, jax.devices())"' ;;
    kernels) XLA_PYTHON_CLIENT_PREALLOCATE=false stage kernels 240 python3 -m pytest -q -p no:cacheprovider -n 4 \
               tests/kernels/test_gpu_native.py -rs ;;
    flops) stage flops 120 python3 -m benchmarks.flops_check --hlo_dir "$out/hlo"
           tar czf "$out/hlo.tgz" -C "$out" hlo && rm -rf "$out/hlo" ;;
    tuning) stage tuning 300 python3 -m benchmarks.attention_tuning ;;
    attention) stage attention 240 python3 -m benchmarks.attention ;;
    moe) stage moe 150 python3 -m benchmarks.moe_layer ;;
    vit22b) stage vit22b 300 python3 -m benchmarks.train_step --gin_file=experiments/vit22b_slice_h100.gin --steps 10 ;;
    vit22b_xla) stage vit22b_xla 240 python3 -m benchmarks.train_step --gin_file=experiments/vit22b_slice_h100.gin --steps 10 --gin.vit22b.ViT22BConfig.attention_impl="'xla'" ;;
    ablations) stage ablations 540 python3 -m benchmarks.ablations --gin_file=experiments/vit22b_slice_h100.gin --steps 10 ;;
    limoe) stage limoe 200 python3 -m benchmarks.train_step --gin_file=experiments/limoe_b16_gpu.gin --steps 10 ;;
    mgdt) stage mgdt 150 python3 -m benchmarks.train_step --gin_file=experiments/mgdt_200m_gpu.gin --steps 10 ;;
    metnet2) stage metnet2 200 python3 -m benchmarks.train_step --gin_file=experiments/metnet2_large_gpu.gin --steps 10 ;;
    *) echo "unknown stage $s" ;;
  esac
done
