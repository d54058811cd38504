.PHONY: setup dev test lint typecheck format bench

setup:
	[ -x .venv/bin/python ] || python3 -m venv .venv
	.venv/bin/pip install -e '.[test]'

dev: setup
	.venv/bin/asr dev

test:
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .

typecheck:
	.venv/bin/mypy .

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

bench:
	.venv/bin/python -m benchmarks.pipeline_latency
