# directus-sync: `make demo` runs a real sync between local Directus instances; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install directus demo test lint unit e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

directus: install
	$(BIN)/python -m directus_sync.devserver install

demo: directus
	$(BIN)/python -m directus_sync.demo $(ARGS)

lint: install
	$(BIN)/ruff check include dags plugins tests bench
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

e2e: directus
	$(BIN)/pytest tests/e2e -q

test: directus lint
	$(BIN)/pytest tests -q -ra

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache

bench: directus
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/sync_bench.py $(BENCH_ARGS)
