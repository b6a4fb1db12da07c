# Three idempotent entry points; each runs setup first (it installs only what is missing).
SHELL := /bin/bash
PY := .venv/bin/python
DURATION ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=  # e.g. make bench BENCH_ARGS=--quick

.PHONY: setup demo test lint bench clean docs

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m picloud demo $(if $(DURATION),--duration $(DURATION),)

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q --durations=30 $(PYTEST_ARGS) tests

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	$(PY) -m bench.run_all $(BENCH_ARGS)

clean: setup
	$(PY) -m picloud clean

# The HTML API reference from docstrings (pdoc) into docs/api/ (not committed).
docs: setup
	$(PY) docs/build_api.py --out docs/api
