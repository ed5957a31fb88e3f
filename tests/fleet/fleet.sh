#!/usr/bin/env bash
# `make fleet-up` / `make fleet-down`: the test fleet's command line (tests/fleet/harness/cli.py).
# Needs root and the packages tests/setup-system.sh installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m tests.fleet.harness "$@"
