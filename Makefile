# `make demo`, `make test` and `make test-fast` each create .venv when it is missing, install shardline into it,
# and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstalled when the package definition or the C extension (built by the install) changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py data/_jpeg_window.c Makefile | cksum | cut -d' ' -f1)
DEMO_DIR ?= runs/vit22b_tiny_digits_cpu8
# libtpu is installed for ahead-of-time TPU compiles only; training here runs on the host CPU.
export JAX_PLATFORMS ?= cpu

.PHONY: demo test test-fast install clean-venv gpu-wheels gpu-data

# The test extras, then what pip's resolver cannot express: torch as this machine's CPU wheel (an unpinned torch
# would download a CUDA build of several GB), timm without its torchvision dependency (whose wheel here does not
# load beside that torch; the interop tests stand in for it), and no Hugging Face `kernels` package, which
# transformers 5 pulls in but which the repository's own kernels/ folder shadows when tests run from its root.
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[tpu,test]'
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps timm==1.0.31
	$(BIN)/python -m pip uninstall --quiet --yes kernels
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/shardline train \
	  --gin_file=experiments/vit22b_tiny_digits_cpu8.gin \
	  --gin.MODEL_DIR="'$(DEMO_DIR)'"
	$(BIN)/shardline eval \
	  --gin_file=experiments/vit22b_tiny_digits_cpu8.gin \
	  --gin.MODEL_DIR="'$(DEMO_DIR)'"

# Three workers on two cores: the storage-outage, signal and multi-process tests spend much of their time waiting
# (for a stalled server, a timeout, a peer), and a third worker computes meanwhile.
test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist loadgroup -q --durations=30 tests

# Every module's unit tests. The tests marked `full` run in `make test` only: end-to-end CLI runs, multi-process
# runs, pod plans and TPU compiles, storage outages, multi-step training and parity runs, and the kernel sweeps.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist loadgroup -q --durations=15 -m "not full" tests

# The wheels a bare GPU machine lacks (benchmarks/gpu_requirements.txt), for the device tool to carry in .whl/.
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d .whl -r benchmarks/gpu_requirements.txt

# The JPEG split of the end-to-end GPU run, prepared here as ArrayRecord shards in .cache/gpu_jpegs (rebuilt).
gpu-data: $(STAMP)
	rm -rf .cache/gpu_jpegs
	$(BIN)/python -m benchmarks.gpu_data

clean-venv:
	rm -rf $(VENV)
