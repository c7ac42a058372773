# gitml task runner: the same commands run on a laptop, in pre-commit and in CI.
#   make run    install the pinned environment and reproduce the pipeline on the bundled data
#   make test   install the dev environment and run the test suite
#   make lint   ruff, ruff format, mypy, workflow and YAML checks (the pre-commit hooks)
#   make serve  serve the model make run produced (FastAPI + ONNX Runtime, http://127.0.0.1:8000)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The virtualenv: .venv in the checkout, or $GITML_VENV, where a self-hosted runner keeps one
# between jobs (PyTorch's CUDA build alone is gigabytes). gitml is installed editable, pointing at
# one checkout: a venv last installed from another checkout loses its stamps and is re-pointed.
VENV := $(or $(GITML_VENV),.venv)
ifneq ($(wildcard $(VENV)/.checkout),)
ifneq ($(shell cat '$(VENV)/.checkout'),$(CURDIR))
$(shell rm -f '$(VENV)'/.stamp-*)
endif
endif
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
# Every stamp also records the checkout the venv's editable gitml points at.
RECORD_CHECKOUT := echo '$(CURDIR)' > '$(VENV)/.checkout'
# Every install first checks .venv's Python against requires-python and brings its pip to the
# version in the lock: a new venv's pip is whatever its Python bundles (Debian 12's python3.11:
# pip 23.0.1), and every machine should resolve the same lock with the same installer.
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_INSTALL := requirements/check-python.sh --venv $(BIN)/python && $(PIP) install --quiet -c $(LOCK) pip \
	&& $(PIP) install --quiet -c $(LOCK)

.DEFAULT_GOAL := help
.PHONY: help install install-release run test lint params lock clean serve bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The interpreter is checked first: a Python outside requires-python stops here, with the versions that work.
$(BIN)/python:
	@requirements/check-python.sh '$(PYTHON)'
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: re-installs only when the lock or pyproject.toml changes.
$(VENV)/.stamp-pipeline: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline]'
	@touch $@ $(VENV)/.stamp-release && $(RECORD_CHECKOUT)

$(VENV)/.stamp-serve: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[serve,logs]'
	@touch $@ && $(RECORD_CHECKOUT)

# The dev environment is every extra: mypy checks benchmarks/bento_service.py against BentoML too.
$(VENV)/.stamp-dev: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,release,dev,bench,logs]'
	@touch $@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve $(VENV)/.stamp-release $(VENV)/.stamp-bench && $(RECORD_CHECKOUT)

# gitml and GTO only: what the deploy and promote workflows need to render, smoke-test and record.
$(VENV)/.stamp-release: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[release]'
	@touch $@ && $(RECORD_CHECKOUT)

$(VENV)/.stamp-bench: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,bench,logs]'
	@touch $@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve $(VENV)/.stamp-release && $(RECORD_CHECKOUT)

install: $(VENV)/.stamp-pipeline  ## install the pipeline's environment from the lock (the pipeline workflow's first step)

install-release: $(VENV)/.stamp-release  ## install gitml and GTO only, no PyTorch (the deploy and promote workflows)

# The gate and the report compare with git (GTO's production model, main), which DVC does not
# track, so they run after `dvc repro` every time. `gitml gate --check` comes last: a failed
# verdict makes `make run` exit 1 once everything, the report included, is written.
run: $(VENV)/.stamp-pipeline  ## reproduce the pipeline, gate it, write the report; exit 1 on a failed gate
	@source $(BIN)/activate && gitml params && dvc repro && gitml gate && gitml report && gitml summary \
		&& gitml gate --check

serve: $(VENV)/.stamp-serve  ## serve models/ (after make run) on http://127.0.0.1:8000; Ctrl-C stops it
	@$(BIN)/gitml serve

bench: $(VENV)/.stamp-bench  ## load-test gitml serve against its baselines (needs wrk: apt-get install wrk)
	@$(BIN)/python benchmarks/serve.py

params: $(VENV)/.stamp-pipeline  ## compose conf/ into params.yaml (what `dvc exp run` does)
	@$(BIN)/gitml params

# On every core (pytest-xdist); the end-to-end modules that share one reproduction of the
# pipeline run on one worker each (their xdist_group). `pytest` alone runs on one core.
test: $(VENV)/.stamp-dev  ## run the test suite
	@source $(BIN)/activate && pytest -n auto --dist loadgroup

lint: $(VENV)/.stamp-dev  ## run every pre-commit hook on every file
	@source $(BIN)/activate && SKIP=dvc-pre-commit pre-commit run --all-files --show-diff-on-failure

lock:  ## re-resolve requirements/lock.txt from pyproject.toml
	requirements/update-lock.sh

clean:  ## remove the virtualenv and the pipeline outputs (the DVC cache and committed metrics stay)
	rm -rf $(VENV) data/interim data/processed data/predictions models
