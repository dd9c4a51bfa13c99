# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck bench torture clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Resolute needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The incident-response demo (docs/demo.md); DEMO_ONCE=1 exits after the story,
# non-zero unless every expected effect happened.
DEMO_ONCE ?=
demo: $(STAMP)
	DEMO_ONCE=$(DEMO_ONCE) $(BIN)/python -m examples.incident_response.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check orchestrator providers tests examples scripts bench
	$(BIN)/ruff format --check orchestrator providers tests examples scripts bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .resolute .pytest_cache .mypy_cache .ruff_cache

# Benchmarks against DBOS and Absurd on the machine's PostgreSQL (bench/README.md).
# BENCH_ARGS=--quick for a smoke run; BENCH_DATABASE_URL to point elsewhere.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?= --profile

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The long crash torture: >= 1,000 runs, >= 50 SIGKILLs and PostgreSQL crash-restarts, on a
# private embedded cluster in a temp dir (never the machine's server; the short one is in
# `make test`). Evidence of violations: .pytest_cache/torture/violations.txt.
torture: $(STAMP)
	$(BIN)/python -m pytest tests/torture -m torture_long -s $(PYTEST_ARGS)
