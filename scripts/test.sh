#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine with Python 3.11 and pip, then runs
# every check: ruff, mypy and the whole pytest suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy .
exec .venv/bin/python -m pytest "$@"
