#!/usr/bin/env bash
# The end-to-end tests: start the stack, run the tests, tear it all down.
#
# With Docker Compose: the stack of e2e/docker-compose.yml and the Playwright suite in
# e2e/tests/. Without it (E2E_MODE=local forces this): the API on a free loopback port and the
# same scenario through the frontend's API client (e2e/smoke.mjs), no browser.
set -euo pipefail
cd "$(dirname "$0")/.."

(cd frontend && npm ci --no-audit --no-fund --silent && npm run build --silent)

if [[ ${E2E_MODE:-auto} != local ]] && docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  compose=(docker compose -f e2e/docker-compose.yml)
  trap '"${compose[@]}" --profile tests down --volumes --remove-orphans' EXIT
  "${compose[@]}" up --detach --wait app
  "${compose[@]}" run --rm playwright
  exit
fi

echo "e2e: no Docker Compose here; the scenario runs against the API on loopback"
work=$(mktemp -d)
server=
trap '[[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
"${PYTHON:-python}" -m backend.app.main --db "$work/e2e.sqlite3" --migrate \
  --host 127.0.0.1 --port 0 --port-file "$work/port" --static frontend/dist 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do
  [[ -s $work/port ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -s $work/port ]] || { echo "e2e: the API did not start in 10 s" >&2; exit 1; }
node e2e/smoke.mjs "http://127.0.0.1:$(cat "$work/port")"
