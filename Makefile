# gitml task runner: the same commands run on a laptop, in pre-commit and in CI.
#   make run    install the pinned environment and reproduce the pipeline on the bundled data
#   make test   install the dev environment and run the test suite
#   make lint   ruff, ruff format, mypy, workflow and YAML checks (the pre-commit hooks)
#   make serve  serve the model make run produced (FastAPI + ONNX Runtime, http://127.0.0.1:8000)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c $(LOCK)

.DEFAULT_GOAL := help
.PHONY: help run test lint params lock clean serve bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: re-installs only when the lock or pyproject.toml changes.
$(VENV)/.stamp-pipeline: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline]'
	@touch $@

$(VENV)/.stamp-serve: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[serve]'
	@touch $@

# The dev environment is every extra: mypy checks benchmarks/bento_service.py against BentoML too.
$(VENV)/.stamp-dev: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,dev,bench]'
	@touch $@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve $(VENV)/.stamp-bench

$(VENV)/.stamp-bench: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,bench]'
	@touch $@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve

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

test: $(VENV)/.stamp-dev  ## run the test suite
	@source $(BIN)/activate && pytest

lint: $(VENV)/.stamp-dev  ## run every pre-commit hook on every file
	@source $(BIN)/activate && SKIP=dvc-pre-commit pre-commit run --all-files --show-diff-on-failure

lock:  ## re-resolve requirements/lock.txt from pyproject.toml
	requirements/update-lock.sh

clean:  ## remove the virtualenv and the pipeline outputs (the DVC cache and committed metrics stay)
	rm -rf $(VENV) data/interim data/processed data/predictions models
