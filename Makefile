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
RUNS ?= 5
SEED ?=

INVENTORY ?= inventory/example
LIMIT ?=
EXTRA ?=
CHECK ?=
VAULT_PASSWORD_FILE ?=
FLEET_HOSTS ?= 3
ANSIBLE_PLAYBOOK = $(BIN)/ansible-playbook -i $(INVENTORY) \
	$(if $(VAULT_PASSWORD_FILE),--vault-password-file $(VAULT_PASSWORD_FILE))

.PHONY: help setup system-deps real-claude real-agents test test-fast lint demo install bench bench-queue bench-schedule bench-dispatch bench-worker bench-escape bench-history bench-notify bench-dashboard bench-recovery bench-accounts chaos-queue chaos-dispatch clean \
	wheels known-hosts provision upgrade fleet-up fleet-down bench-fleet

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[orchestrator,dev]'
	@touch $@

setup: $(STAMP) ## Create .venv and install superagent with the orchestrator's and the dev extras

system-deps: ## Install the Debian packages the tests need (when root; else they skip)
	tests/setup-system.sh

# The pin comes from control/pins.json, like every other reader's.
CLAUDE_CODE_PIN := $(shell $(PYTHON) -c 'import json; print(json.load(open("control/pins.json"))["claude_code"]["version"])')
REAL_CLAUDE := .cache/claude-code-$(CLAUDE_CODE_PIN)/node_modules/.bin/claude

real-claude: ## Install the pinned Claude Code under .cache/ (the real-CLI tests run against it)
	@test -x $(REAL_CLAUDE) || { command -v npm >/dev/null \
	  && npm install --silent --no-audit --no-fund --prefix .cache/claude-code-$(CLAUDE_CODE_PIN) \
	     @anthropic-ai/claude-code@$(CLAUDE_CODE_PIN) \
	  || echo "real-claude: could not install it; the real-CLI tests will skip"; }

# codex, gemini and opencode at their pins (control/pins.json `agents`), each under .cache/.
AGENT_PINS := $(shell $(PYTHON) -c 'import json; a = json.load(open("control/pins.json"))["agents"]; print(" ".join(k + "=" + v["package"] + "@" + v["version"] for k, v in a.items()))')

real-agents: ## Install the pinned codex, gemini and opencode CLIs under .cache/ (real-CLI tests)
	@for pin in $(AGENT_PINS); do name=$${pin%%=*}; spec=$${pin#*=}; dir=.cache/agents/$$name-$${spec##*@}; \
	  test -d $$dir/node_modules/.bin || { command -v npm >/dev/null \
	    && npm install --silent --no-audit --no-fund --prefix $$dir $$spec \
	    || echo "real-agents: could not install $$spec; its real-CLI tests will skip"; }; done

test: setup system-deps real-claude real-agents ## Run the whole test suite
	SUPERAGENT_REAL_CLAUDE="$${SUPERAGENT_REAL_CLAUDE:-$$(test -x $(REAL_CLAUDE) && echo $(CURDIR)/$(REAL_CLAUDE))}" \
	  $(BIN)/python -m pytest --durations=25

test-fast: setup ## Run the tests not marked slow
	$(BIN)/python -m pytest -m 'not slow'

lint: setup ## ruff, mypy, import contracts (lint-imports), yamllint, ansible-lint
	$(BIN)/ruff check control tests bench
	$(BIN)/ruff format --check control tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint -q

demo: setup ## Run the main job on the built-in default
	$(BIN)/python -m control.demo

install: setup ## Put `control` on PATH: a link in ~/.local/bin to .venv/bin/control
	mkdir -p $(HOME)/.local/bin
	ln -sfn $(CURDIR)/$(BIN)/control $(HOME)/.local/bin/control
	@case ":$$PATH:" in *":$(HOME)/.local/bin:"*) echo "control is on PATH";; \
	  *) echo "add ~/.local/bin to PATH (e.g. in ~/.profile) to run control";; esac

bench: bench-queue bench-schedule bench-dispatch bench-worker bench-escape bench-history bench-notify bench-dashboard bench-recovery bench-accounts ## Run every benchmark

bench-queue: setup ## Queue throughput against huey, litequeue, persist-queue
	$(BIN)/python bench/bench_queue.py

bench-schedule: setup ## Makespan / lower bound on 200 random DAGs vs first-free; validation time
	$(BIN)/python bench/bench_schedule.py

bench-dispatch: wheels ## Enqueue-to-claim latency per transport (ansible hosts on a worker venv of the wheels); orchestrator CPU per worker per tick
	$(BIN)/python bench/bench_dispatch.py

bench-worker: setup ## Worker wake-up latency (inotify vs polling) and idle CPU
	$(BIN)/python bench/bench_worker.py

bench-escape: setup ## The escape corpus on a local worker and the sandbox's cost per phase (JSON last line)
	$(BIN)/python bench/bench_escape.py

bench-notify: setup ## Event-to-delivery latency to a local webhook; what notifications cost a tick
	$(BIN)/python bench/bench_notify.py

bench-recovery: setup ## Agent minutes with feedback and checkpoints vs blind retries; conflicts resolved (JSON last line)
	$(BIN)/python bench/bench_recovery.py

bench-dashboard: setup system-deps ## 100 runs + a 1,000-phase run: run page render, event to screen, CPU per client (JSON last line)
	$(BIN)/python bench/bench_dashboard.py

bench-history: setup ## A year of history (10k runs, 5M events): status, runs, tick, gc (JSON last line)
	$(BIN)/python bench/bench_history.py

bench-accounts: setup ## A simulated day: 200 phases on 3 accounts vs 1 and vs no fallback (JSON last line)
	$(BIN)/python bench/bench_accounts.py

chaos-queue: setup ## Kill -9 producers and consumers for SECONDS_CHAOS s; print the checker's JSON
	$(BIN)/python tests/chaos/queue_chaos.py --seconds $(SECONDS_CHAOS)

chaos-dispatch: setup ## RUNS web-app runs under kills, freezes, outages; JSON last line (SEED=)
	$(BIN)/python tests/chaos/dispatch_chaos.py --runs $(RUNS) $(if $(SEED),--seed $(SEED))

wheels: setup ## Build superagent's wheels for the workers (dist/wheels) and with the orchestrator extra (dist/wheels/orchestrator)
	@rm -rf dist/wheels.tmp && mkdir -p dist/wheels dist/wheels.tmp/src
	@tar -cf - --exclude=__pycache__ pyproject.toml README.md control | tar -xf - -C dist/wheels.tmp/src
	@# A fixed SOURCE_DATE_EPOCH makes the wheel reproducible: same code, same bytes, no reinstall.
	SOURCE_DATE_EPOCH=315532800 $(BIN)/python -m pip wheel --quiet --disable-pip-version-check \
		--find-links dist/wheels -w dist/wheels.tmp/out dist/wheels.tmp/src \
		"pip==$$($(BIN)/python -c 'import pip; print(pip.__version__)')" \
		2>dist/wheels.tmp/build.log || { cat dist/wheels.tmp/build.log; exit 1; }
	@# The Slack agent's host installs superagent[orchestrator]: the whole set (that wheel,
	@# the extra and every dependency) in a directory of its own, out of the worker role's
	@# reach (it takes dist/wheels/*.whl; workers need none of the extra).
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check \
		--find-links dist/wheels.tmp/out -w dist/wheels.tmp/out/orchestrator \
		"$$(ls dist/wheels.tmp/out/superagent-*.whl)[orchestrator]" \
		"pip==$$($(BIN)/python -c 'import pip; print(pip.__version__)')" \
		2>dist/wheels.tmp/build.log || { cat dist/wheels.tmp/build.log; exit 1; }
	@rm -rf dist/wheels && mv dist/wheels.tmp/out dist/wheels && rm -rf dist/wheels.tmp
	@ls dist/wheels | sed 's/^/  /'
	@echo "  orchestrator/: $$(ls dist/wheels/orchestrator | wc -l) wheels"

known-hosts: setup ## Record the SSH host keys of hosts met for the first time (INVENTORY=, LIMIT=)
	$(ANSIBLE_PLAYBOOK) playbooks/known_hosts.yml $(if $(LIMIT),--limit '$(LIMIT)') $(EXTRA)

provision: wheels ## Provision the fleet: playbooks/site.yml (INVENTORY=, LIMIT=host, EXTRA=; CHECK=1: dry run)
	$(ANSIBLE_PLAYBOOK) playbooks/site.yml $(if $(LIMIT),--limit '$(LIMIT):tunnel_endpoints') \
		$(if $(CHECK),--check --diff) $(EXTRA)

upgrade: wheels ## Rolling upgrade to the inventory's pins, BATCH hosts at a time (INVENTORY=, BATCH=1, STATE=)
	$(BIN)/control upgrade --inventory $(INVENTORY) --batch $(or $(BATCH),1) \
		$(if $(STATE),--state $(STATE)) \
		$(if $(VAULT_PASSWORD_FILE),--vault-password-file $(VAULT_PASSWORD_FILE))

fleet-up: setup system-deps ## Bring up the test fleet: FLEET_HOSTS real hosts (root), .fleet/inventory
	tests/fleet/fleet.sh up --hosts $(FLEET_HOSTS)

fleet-down: setup ## Remove the test fleet (keeps the cached base image)
	tests/fleet/fleet.sh down

bench-fleet: setup system-deps ## Provisioning 3 fresh hosts, a rerun, a rolling upgrade under a run (JSON last line)
	$(BIN)/python bench/bench_fleet.py

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
