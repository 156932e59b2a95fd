# directus-sync: `make demo` runs a real sync between local Directus instances; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Output line by line as it happens, also when piped to a file.
RUN := PYTHONUNBUFFERED=1 $(BIN)/python -u
# What the machine must have, checked with the machine's Python before anything is installed.
PREREQS := $(PYTHON) devtools/prereqs.py

.PHONY: install directus demo test lint unit e2e bench clean check-demo check-test check-bench constraints

# -- the virtualenv: one install per extra, again only when pyproject.toml changed ------------------
# Versions come from constraints.txt (see the constraints target).
# .installed-runtime: the package and its runtime dependencies (all the demo imports);
# .installed-test: plus [test,dev] (pytest, playwright, hypothesis, ruff, mypy...); .installed-bench: plus [bench].

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $@ $(VENV)/.installed-runtime

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bench]"
	touch $@ $(VENV)/.installed-runtime

# constraints.txt pins every package the tests ran with, as Airflow's own constraints files do: without it
# pip spends many minutes choosing among boto3/botocore/aiobotocore/s3fs releases. Refresh it after changing
# dependencies: `make constraints` (in a virtualenv where `make test` passes).
constraints:
	$(BIN)/pip freeze --exclude-editable | grep -v -e '^directus-sync' -e ' @ file:' > constraints.txt

install: $(VENV)/.installed-test

check-demo:
	@$(PREREQS) demo

check-test:
	@$(PREREQS) test

check-bench:
	@$(PREREQS) bench

# The pinned Directus from npm into .cache/directus (once; devserver keeps its own marker).
directus: $(VENV)/.installed-runtime
	$(RUN) -m devtools.devserver install

demo: check-demo
	@$(MAKE) --no-print-directory directus
	$(RUN) -m devtools.demo $(ARGS)

lint: install
	$(BIN)/ruff check include devtools dags plugins tests bench
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

e2e: install directus
	$(BIN)/pytest tests/e2e -q

test: check-test
	@$(MAKE) --no-print-directory install directus lint
	$(BIN)/pytest tests -q -ra --durations=25

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache

bench: check-bench
	@$(MAKE) --no-print-directory $(VENV)/.installed-bench directus
	$(RUN) bench/sync_bench.py $(BENCH_ARGS)
