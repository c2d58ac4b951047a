# `make demo` and `make test` each create .venv when it is missing, install shardline into it, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstalled when the package definition or the C extension (built by the install) changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py data/_jpeg_window.c | cksum | cut -d' ' -f1)
DEMO_DIR ?= runs/vit22b_tiny_digits_cpu8
# libtpu is installed for ahead-of-time TPU compiles only; training here runs on the host CPU.
export JAX_PLATFORMS ?= cpu

.PHONY: demo test install clean-venv

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[tpu,test]'
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

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=30 tests

clean-venv:
	rm -rf $(VENV)
