# superagent — `make` (or `make help`) lists every target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SECONDS_CHAOS ?= 20

.PHONY: help setup system-deps test test-fast lint demo bench bench-queue bench-schedule bench-dispatch chaos-queue clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP) ## Create .venv and install superagent with its dev extras

system-deps: ## Install the Debian packages the tests need (when root; else they skip)
	tests/setup-system.sh

test: setup system-deps ## Run the whole test suite
	$(BIN)/python -m pytest

test-fast: setup ## Run the tests not marked slow
	$(BIN)/python -m pytest -m 'not slow'

lint: setup ## ruff, mypy, yamllint, ansible-lint
	$(BIN)/ruff check control tests bench
	$(BIN)/ruff format --check control tests bench
	$(BIN)/mypy
	$(BIN)/yamllint --strict .

demo: setup ## Run the main job on the built-in default
	$(BIN)/python -m control.demo

bench: bench-queue bench-schedule bench-dispatch ## Run every benchmark

bench-queue: setup ## Queue throughput against huey, litequeue, persist-queue
	$(BIN)/python bench/bench_queue.py

bench-schedule: setup ## Makespan / lower bound on 200 random DAGs vs first-free; validation time
	$(BIN)/python bench/bench_schedule.py

bench-dispatch: setup ## Enqueue-to-claim latency per transport; orchestrator CPU per worker per tick
	$(BIN)/python bench/bench_dispatch.py

chaos-queue: setup ## Kill -9 producers and consumers for SECONDS_CHAOS s; print the checker's JSON
	$(BIN)/python tests/chaos/queue_chaos.py --seconds $(SECONDS_CHAOS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
