# gitml task runner: the same commands run on a laptop, in pre-commit and in CI.
#   make run    install the pinned environment and reproduce the pipeline on the bundled data
#   make test   install the dev environment and run the test suite
#   make lint   ruff, ruff format, mypy, workflow and YAML checks (the pre-commit hooks)
#   make serve  serve the model make run produced (FastAPI + ONNX Runtime, http://127.0.0.1:8000)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The virtualenv: .venv in the checkout, or $GITML_VENV, where a self-hosted runner keeps one
# between jobs (PyTorch's CUDA build alone is gigabytes).
VENV := $(or $(GITML_VENV),.venv)
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
# One stamp per set of extras, holding a checksum of the lock and pyproject.toml it was installed
# from. A stamp of other files is removed here, so a venv re-installs when they change, and only
# then: a fresh clone or a runner's new workspace has new file times but the same checksum.
DEPS_SUM := $(shell cat $(LOCK) pyproject.toml 2>/dev/null | cksum | tr ' ' -)
$(foreach s,$(wildcard $(VENV)/.stamp-*),$(if $(filter $(DEPS_SUM),$(shell cat '$(s)')),,$(shell rm -f '$(s)')))
STAMP = for s in $(1); do echo '$(DEPS_SUM)' > "$$s"; done
# gitml is installed editable, pointing at one checkout, which every install records. From another
# checkout (a runner's new workspace, with the venv it kept) the venv keeps its packages and gitml
# alone is pointed at this one (--no-deps: the stamps say every requirement is there).
RECORD_CHECKOUT := echo '$(CURDIR)' > '$(VENV)/.checkout'
REPOINT := [ "$$(cat '$(VENV)/.checkout' 2>/dev/null)" = '$(CURDIR)' ] \
	|| { $(BIN)/python -m pip --disable-pip-version-check install --quiet -c $(LOCK) setuptools \
	&& $(BIN)/python -m pip --disable-pip-version-check install --quiet --no-deps --no-build-isolation -e . \
	&& $(RECORD_CHECKOUT); }
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

$(VENV)/.stamp-pipeline: | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline]'
	@$(call STAMP,$@ $(VENV)/.stamp-release) && $(RECORD_CHECKOUT)

$(VENV)/.stamp-serve: | $(BIN)/python
	$(PIP_INSTALL) -e '.[serve,logs]'
	@$(call STAMP,$@) && $(RECORD_CHECKOUT)

# The dev environment is every extra: mypy checks benchmarks/bento_service.py against BentoML too.
$(VENV)/.stamp-dev: | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,release,dev,bench,logs]'
	@$(call STAMP,$@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve $(VENV)/.stamp-release $(VENV)/.stamp-bench) \
		&& $(RECORD_CHECKOUT)

# gitml and GTO only: what the deploy and promote workflows need to render, smoke-test and record.
$(VENV)/.stamp-release: | $(BIN)/python
	$(PIP_INSTALL) -e '.[release]'
	@$(call STAMP,$@) && $(RECORD_CHECKOUT)

$(VENV)/.stamp-bench: | $(BIN)/python
	$(PIP_INSTALL) -e '.[pipeline,serve,bench,logs]'
	@$(call STAMP,$@ $(VENV)/.stamp-pipeline $(VENV)/.stamp-serve $(VENV)/.stamp-release) && $(RECORD_CHECKOUT)

install: $(VENV)/.stamp-pipeline  ## install the pipeline's environment from the lock (the pipeline workflow's first step)
	@$(REPOINT)

install-release: $(VENV)/.stamp-release  ## install gitml and GTO only, no PyTorch (the deploy and promote workflows)
	@$(REPOINT)

# The gate and the report compare with git (GTO's production model, main), which DVC does not
# track, so they run after `dvc repro` every time. `gitml gate --check` comes last: a failed
# verdict makes `make run` exit 1 once everything, the report included, is written.
run: $(VENV)/.stamp-pipeline  ## reproduce the pipeline, gate it, write the report; exit 1 on a failed gate
	@$(REPOINT)
	@source $(BIN)/activate && gitml params && dvc repro && gitml gate && gitml report && gitml summary \
		&& gitml gate --check

serve: $(VENV)/.stamp-serve  ## serve models/ (after make run) on http://127.0.0.1:8000; Ctrl-C stops it
	@$(REPOINT)
	@$(BIN)/gitml serve

bench: $(VENV)/.stamp-bench  ## load-test gitml serve against its baselines (needs wrk: apt-get install wrk)
	@$(REPOINT)
	@$(BIN)/python benchmarks/serve.py

params: $(VENV)/.stamp-pipeline  ## compose conf/ into params.yaml (what `dvc exp run` does)
	@$(REPOINT)
	@$(BIN)/gitml params

# On every core (pytest-xdist); each end-to-end group that shares a state runs on one worker
# (their xdist_group), in the order tests/conftest.py gives. With a worker per core, each worker
# and what it starts computes on one thread (PyTorch, OpenBLAS, joblib): threads of one worker
# would only wait for another's core. `pytest` alone runs on one core.
TEST_THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 LOKY_MAX_CPU_COUNT=1
test: $(VENV)/.stamp-dev  ## run the test suite
	@$(REPOINT)
	@source $(BIN)/activate && $(TEST_THREADS) pytest -n auto --dist loadgroup --no-loadscope-reorder

lint: $(VENV)/.stamp-dev  ## run every pre-commit hook on every file
	@$(REPOINT)
	@source $(BIN)/activate && SKIP=dvc-pre-commit pre-commit run --all-files --show-diff-on-failure

lock:  ## re-resolve requirements/lock.txt from pyproject.toml
	requirements/update-lock.sh

clean:  ## remove the virtualenv and the pipeline outputs (the DVC cache and committed metrics stay)
	rm -rf $(VENV) data/interim data/processed data/predictions models
