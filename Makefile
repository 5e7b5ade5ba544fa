# Berth's entry points. `make test` is the one CI runs (.ci/run).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CLUSTER_DIR := .cache/cluster
export PATH := $(CURDIR)/$(BIN):/usr/local/go/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/hack
export GOFLAGS := -p=2

.PHONY: help deps testbin lint typecheck unit test run cluster-up cluster-down crds chart-crds \
	manifests chart-lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps: $(STAMP)  ## Python venv, Debian packages (docker-registry, skopeo), Go check
	hack/install-system-deps.sh

testbin: deps  ## build (or find cached) kube-apiserver, etcd, kwok, ...
	hack/testbin/build.sh

lint: deps  ## ruff, formatting, import-linter contracts, complexity (xenon), hadolint
	$(BIN)/ruff check operator hack tests
	$(BIN)/ruff format --check operator hack tests
	$(BIN)/lint-imports
	$(BIN)/xenon --max-absolute C operator/berth/reconcile operator/berth/resources
	$(BIN)/hadolint Dockerfile

typecheck: deps  ## mypy --strict
	$(BIN)/mypy

unit: deps  ## tests that need neither cluster nor registry
	$(BIN)/pytest tests/unit

test: testbin lint typecheck  ## everything: lint, types, unit and integration tests
	$(BIN)/pytest -ra

crds: deps  ## regenerate crds/ from the pydantic models, and the chart's copy
	$(BIN)/python -m berth.api.crdgen crds
	$(BIN)/python hack/installgen.py chart-crds

chart-crds: deps  ## copy crds/ into charts/berth/templates/crds/ (a test fails on drift)
	$(BIN)/python hack/installgen.py chart-crds

manifests: testbin chart-crds  ## regenerate the kustomize base manifests/ from the chart
	$(BIN)/python hack/installgen.py manifests --helm "$$(hack/testbin/build.sh)/helm"

chart-lint: testbin  ## helm lint --strict and a default helm template of charts/berth
	"$$(hack/testbin/build.sh)/helm" lint --strict charts/berth
	"$$(hack/testbin/build.sh)/helm" template berth charts/berth --namespace berth-system >/dev/null

cluster-up: testbin  ## start the local control plane (kubeconfig: .cache/cluster/kubeconfig)
	$(BIN)/python -m testbed up --dir $(CLUSTER_DIR)

cluster-down:  ## stop it
	@if [[ -x $(BIN)/python ]]; then $(BIN)/python -m testbed down --dir $(CLUSTER_DIR); \
	else echo "no venv, so no cluster was started from here"; fi

run: deps  ## the operator against the current kube context, or a local test-bed cluster
	hack/run.sh

bench: testbin  ## benchmarks; results go into docs/benchmarks.md by hand
	$(BIN)/python -m benchmarks

clean: cluster-down
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
