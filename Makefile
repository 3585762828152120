# The two commands: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run test lint unit toolchain crds cluster-up cluster-down cluster-kind system-deps clean image constraints

help:
	@echo "make run    - the operator reconciling examples/tenant.yaml on the local control plane"
	@echo "              (CLUSTER=current: the current kubeconfig context; CLUSTER=kind: kind)"
	@echo "make test   - lint, type-check and the whole test suite (starts what it needs)"
	@echo "make cluster-up / cluster-down - the local control plane in the background"
	@echo "make crds   - regenerate crds/ and the chart's CRD templates from the API models"
	@echo "make image  - build the operator's image (needs Docker)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

system-deps:
	@bash .ci/system-deps

toolchain:
	@bash e2e/toolchain/build.sh >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# pytest exits 5 when it collected no test; make fails on any non-zero exit, so an empty
# run can never pass silently. The 25 slowest tests are printed, to keep the warm run short.
test: system-deps $(STAMP) lint toolchain
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

run: system-deps $(STAMP)
	$(BIN)/python -m e2e.run

crds: $(STAMP)
	$(BIN)/cleo-operator crds

cluster-up: system-deps $(STAMP)
	@$(BIN)/python -m e2e.cluster up

cluster-down: $(STAMP)
	@$(BIN)/python -m e2e.cluster down

# For laptops with Docker (cannot run on the Docker-less development machines).
cluster-kind: $(STAMP)
	kind create cluster --name cleo --config e2e/kind-config.yaml
	@echo "then: CLEO_TEST_CLUSTER=current make test, or CLUSTER=current make run"

# The operator's image (machines with Docker); the backup CronJobs run the same image.
IMAGE ?= cleo-operator:dev
image:
	docker build --build-arg VERSION=$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) -t $(IMAGE) .

# The image's pinned dependencies, from the versions this virtualenv runs.
constraints: $(STAMP)
	$(BIN)/python -m tests.unit.test_chart_image > constraints.txt

clean:
	-$(BIN)/python -m e2e.cluster down 2>/dev/null
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
