#!/usr/bin/env bash
# The GPU suite on a GPU machine that has JAX but not this project's other packages: installs the wheels carried
# in .whl/ (`make gpu-wheels` downloads those of benchmarks/gpu_requirements.txt) and shardline itself into the
# machine's Python, then runs every stage within the time budget (benchmarks/gpu_suite.py says more):
#   bash benchmarks/gpu_suite.sh OUT_DIR [--budget 450] [--stages env,moe,...]
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR [flags of python -m benchmarks.gpu_suite]}
shift
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} SHARDLINE_COMPILATION_CACHE=/tmp/shardline_xla
exec python3 -m benchmarks.gpu_suite --out "$out" "$@"
