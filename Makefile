# thinghub developer targets; CI (.ci/run) runs `make test`, the same command as the README.
PY ?= python3
PYTEST ?= $(PY) -m pytest

.PHONY: all deps install console-assets fmt check test unit e2e e2e-postgres contract bench bench-guard clean

all: check test

deps:  ## Debian packages the tests need (PostgreSQL, npm, chromium); no-op when present
	bash scripts/install-deps.sh

install:  ## the package with its test extras
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'

console-assets:  ## the console's npm files (uPlot) into its static/vendor/; install does it too
	$(PY) scripts/console_assets.py

fmt:
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

check:
	$(PY) -m ruff format --check src tests bench
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy src
	$(PY) -m mypy bench  # the benchmarks call the store directly: keep them in step with it

test: deps install check  ## everything: unit, contract (SQLite + PostgreSQL), e2e on both
	$(PYTEST) -q --durations=20
	$(PY) -m tests.pg THINGHUB_E2E_POSTGRES_DSN $(PYTEST) -q -m "not backend_agnostic" tests/e2e

unit: install
	$(PYTEST) -q tests/unit

contract: deps install
	$(PYTEST) -q tests/contract

e2e: deps install
	$(PYTEST) -q tests/e2e

e2e-postgres: deps install  ## the whole e2e suite with every server on PostgreSQL
	$(PY) -m tests.pg THINGHUB_E2E_POSTGRES_DSN $(PYTEST) -q -m "not backend_agnostic" tests/e2e

bench-guard: deps install  ## the ~20 s device-path cost check (also part of `make test`)
	$(PYTEST) -q tests/bench_guard

bench: deps install  ## benchmarks (not tests); results go to docs/performance.md
	bash scripts/install-deps.sh bench
	$(PY) -m bench.run
	$(PY) -m bench.device_load
	$(PY) -m bench.device_load --idle 10000
	$(PY) -m bench.methods_sdk

clean:
	rm -rf thinghub-data .pytest_cache .mypy_cache .ruff_cache
