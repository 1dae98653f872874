# The README's two commands are `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

# Tests and benchmarks run in real mode against the machine's PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/janction
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) DJANGO_SECRET_KEY=janction-test-only-secret-key
# pytest-xdist worker processes (0: one process). Each worker has its own test database (test_janction_gwN) and
# Redis database (TEST_REDIS_URL's plus N); a test file runs whole on one worker. See docs/testing.md.
PYTEST_WORKERS ?= 2

.PHONY: run test lint format migrate proto bench deps deps-dev system-deps js-deps vendor clean

# The marketplace and the demo agent that `make run` starts share one virtualenv.
$(VENV)/.installed: requirements.txt agent/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt -r agent/requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

deps: $(VENV)/.installed
deps-dev: $(VENV)/.installed-dev

system-deps:
	bash scripts/install-system-deps.sh

js-deps: package.json package-lock.json
	@if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi

## vendor: copy htmx and Chart.js from node_modules (package.json's pinned versions) into static/vendor/
vendor: js-deps
	node scripts/vendor-js.js

## run: set everything up and start the marketplace on the embedded default at http://$(HOST):$(PORT)
# scripts/run-embedded.sh is the whole command after the install step; tests/test_make_run.py starts it as is.
run: deps
	HOST=$(HOST) PORT=$(PORT) PY=$(PY) bash scripts/run-embedded.sh

## test: install what the tests need, lint, check the import rules and migrations, the extension's node tests, pytest
test: deps-dev system-deps js-deps
	bash scripts/ensure-services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	node --test extension/tests/
	$(TEST_ENV) $(PY) manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

proto: deps-dev
	bash scripts/gen_proto.sh

## serve: real mode's web tier (granian workers, pooled PostgreSQL connections); needs DATABASE_URL etc.
.PHONY: serve
serve: deps
	HOST=$(HOST) PORT=$(PORT) bash scripts/serve.sh

## bench: every benchmark the README lists (slow; not part of the tests)
BENCHMARKS := ledger_bench pvcg_bench gateway_bench metering_bench settlement_bench api_load
bench: deps-dev js-deps
	bash scripts/ensure-services.sh
	set -e; for name in $(BENCHMARKS); do echo "== benchmarks.$$name"; $(TEST_ENV) $(PY) -m benchmarks.$$name; done

clean:
	rm -rf var .pytest_cache .ruff_cache
