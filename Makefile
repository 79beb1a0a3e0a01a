# Two commands for a newcomer: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
DATA_FILE := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# uv from PATH, else a private copy installed into .tools/ with pip.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: setup data demo test lint typecheck docs-build docs pytest weights bench clean

$(UV):
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) Python
# never caches bytecode, and every process compiled its imports again: 12 s instead of
# 4.7 to import torch, convlens, optuna, matplotlib, scipy and sklearn (each test
# subprocess, sweep worker, Ray worker and notebook kernel paid it). 23 s once here.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

setup: .venv/.synced

# FashionMNIST from Debian's dataset-fashion-mnist when it is missing and apt-get is usable
# (through .ci/apt-get, which waits while another process holds the package manager's lock);
# otherwise convlens looks in $$CONVLENS_DATA and its cache, and downloads on first use.
data:
	@if [ ! -f $(DATA_FILE) ] && [ -z "$$CONVLENS_DATA" ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  ($$SUDO .ci/apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO .ci/apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "could not install dataset-fashion-mnist; convlens will try to download FashionMNIST"; \
	fi

demo: setup data
	$(UV) run --frozen convlens demo

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup
	$(UV) run --frozen mypy

# the reference site: built with --strict in `make test` (a broken link or reference fails),
# served at http://127.0.0.1:8000 by `make docs`
docs-build: setup
	NO_MKDOCS_2_WARNING=1 $(UV) run --frozen mkdocs build --strict --quiet

docs: setup
	NO_MKDOCS_2_WARNING=1 $(UV) run --frozen mkdocs serve --dev-addr 127.0.0.1:8000

# two test processes (pytest-xdist), one thread each: on 2 cores the suite takes about
# 20 min this way against 32 min in one process; `make test TEST_WORKERS=0` for one
TEST_WORKERS ?= 2

pytest: setup data
	$(UV) run --frozen pytest -n $(TEST_WORKERS)

test: lint typecheck docs-build pytest

# Reproduce the shipped checkpoint: seed 0 of the default before its warm-up (the
# no-warmup preset), which trained the shipped file.
weights: setup data
	$(UV) run --frozen convlens train --out runs/fashion-cnn --seed 0 --preset no-warmup
	cp runs/fashion-cnn/model.pt src/convlens/models/weights/fashion-cnn.pt

# The previous default, the default and the best preset, 3 seeds each, side by side
# (about an hour on 2 cores); the runs stay in runs/bench, and a benchmark that was
# interrupted continues from the runs it finished.
bench: setup data
	$(UV) run --frozen python benchmarks/train_speed.py --configs previous default best \
	  --json benchmarks/results/train_speed.json --figure docs/time_to_accuracy.png \
	  --keep runs/bench

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache build/site
