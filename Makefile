# Lockgate: every target creates .venv on first use and reinstalls only when pyproject.toml changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000
export DAGSTER_HOME := $(CURDIR)/.lockgate/dagster_home
export LOCKGATE_CONFIG ?= $(CURDIR)/lockgate.yaml

.PHONY: run test lint torture bench bench-spark seed clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m pipelines.demo --home "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

torture: $(STAMP)
	$(BIN)/python -m tests.torture.run --trials $(or $(TRIALS),1000) --seed $(or $(SEED),1) --backend $(or $(BACKEND),local) --faults $(or $(FAULTS),0.05) --workers $(or $(WORKERS),2) --report RELIABILITY.md

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf .lockgate
