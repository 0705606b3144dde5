# kflow: every developer and CI command starts here.
SHELL := /bin/bash
PYTHON ?= python3
# The virtualenv's interpreter: Debian 12's python3.11 where the machine has it, the one the
# images run (images/base/packages), so that tests and benchmarks run kflow as it ships. It
# is built with profile-guided optimisation: a source build without it (pyenv's default)
# spends ~15% more CPU per node in a worker (bench/RESULTS.md). Elsewhere python3 from PATH.
VENV_PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) $(shell command -v $(PYTHON)))
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help deps venv test test-fast chaos lint ruff typecheck layers crds crds-check docs docs-check gitops gitops-check demo demo-local bench clean

help:
	@echo "make demo        run a real flow end to end (local cluster, Redis, operator, pods)"
	@echo "make demo-local  run the order workflow with 'kflow run --local' (no Kubernetes)"
	@echo "make test        the whole test suite (brings up Redis and the local cluster itself)"
	@echo "make test-fast   unit tests and Redis tests only"
	@echo "make chaos       the chaos suite: operator, worker, Redis, API server faults mid-flow"
	@echo "make web         build the web view (web/) into operator/kflow/server/web; make web-test: its unit tests"
	@echo "make lint        ruff + mypy + layers + generated files up to date"
	@echo "make layers      check the import layers and contracts ([tool.importlinter] in pyproject.toml)"
	@echo "make bench       the benchmarks; figures go to bench/RESULTS.md"

# The virtualenv is built from the lock file, so every machine gets the same versions.
$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing --python $(VENV_PYTHON) $(VENV)
	uv sync -q --frozen --extra dev --extra fast --python $(VENV)/bin/python
	@touch $@

venv: $(VENV)/.installed

# Debian packages the cluster, Redis and the image builds need (installed when run as root).
deps:
	@bash hack/deps.sh

test: deps venv web
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory web-test

test-fast: venv
	$(PY) -m pytest -q -m "not cluster and not slow"

# Kills and cuts parts of the local cluster and Redis during flows (tests/chaos); needs root.
chaos: deps venv
	$(PY) -m pytest -q -m chaos tests/chaos

# Each part is a target of its own, so .pre-commit-config.yaml runs exactly these.
lint: crds-check docs-check gitops-check layers ruff typecheck web-lock-check

ruff: venv
	$(VENV)/bin/ruff check operator tests bench examples hack

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict bench hack/demo.py  # the tools call kflow's API too

# The layers (api < graph < store < engine < settings < kube | sdk < cli < devkit) and the
# forbidden imports, as stated in pyproject.toml; fails naming the import that breaks one.
layers: venv
	PYTHONPATH=$(CURDIR)/operator $(VENV)/bin/lint-imports --no-cache --no-logo

crds: venv
	$(PY) -m kflow.api.crdgen

crds-check: venv
	$(PY) -m kflow.api.crdgen --check
	$(PY) hack/chartgen.py --check

docs: venv
	$(PY) -m kflow.api.docgen --update README.md

docs-check: venv
	$(PY) -m kflow.api.docgen --check README.md

# Argo CD's argocd-cm snippet (gitops/argocd/argocd-cm.yaml) from the health checks beside it.
gitops: venv
	$(PY) hack/argocdgen.py

gitops-check: venv
	$(PY) hack/argocdgen.py --check

# The README's first command: cluster, Redis, CRDs, operator, pods; cleans up after itself.
demo: deps venv web
	$(PY) hack/demo.py

demo-local: venv
	$(VENV)/bin/kflow run --local examples/order-workflow.yaml --handlers examples/handlers.py

bench: venv web
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_workers.py
	$(PY) bench/bench_map.py
	@if bash tests/cluster/scripts/cluster-status.sh --quiet; then $(PY) bench/bench_operator.py \
	  && $(PY) bench/bench_install.py --demo && $(PY) bench/bench_api.py \
	  && $(PY) bench/bench_cli_get.py && $(PY) bench/bench_web_paint.py; \
	  else echo "the cluster benches (operator, install, api, cli get, web paint) skipped: the local cluster is not running (make cluster-up)"; fi
	cd bench/vs-bullmq && npm ci --silent --no-audit --no-fund
	$(PY) bench/vs-bullmq/run.py --repeat 3
	$(PY) bench/vs-bullmq/cluster.py --repeat 3

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

include tests/cluster/cluster.mk
include web/web.mk
