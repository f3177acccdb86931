# Lockgate: every target creates .venv on first use and reinstalls only when pyproject.toml changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000
# State of `make run`: override both to run a second instance elsewhere, e.g.
#   make run PORT=3001 LOCKGATE_HOME=/tmp/lg/.lockgate LOCKGATE_CONFIG=/tmp/lg/lockgate.yaml
# (the config's relative landing/warehouse/ledger paths resolve against the config's folder).
LOCKGATE_HOME ?= $(CURDIR)/.lockgate
LOCKGATE_CONFIG ?= $(CURDIR)/lockgate.yaml
# Only `make run` uses the demo instance and config; tests make their own.
run: export DAGSTER_HOME := $(abspath $(LOCKGATE_HOME))/dagster_home
run: export LOCKGATE_CONFIG := $(LOCKGATE_CONFIG)
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-all browser lint torture bench bench-spark seed clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `exec`: dagster dev replaces the recipe's shell, so Ctrl-C (SIGINT to the process group)
# reaches it directly and it stops its webserver, daemon and code server before exiting.
run: $(STAMP)
	$(BIN)/python -m pipelines.demo --home "$(DAGSTER_HOME)" --config "$(LOCKGATE_CONFIG)"
	exec $(BIN)/dagster dev -w "$(CURDIR)/workspace.yaml" -h $(HOST) -p $(PORT)

# Two workers (CI has 2 cores; much of the suite waits on subprocesses and servers); whole
# files stay on one worker so module fixtures are shared. `slow` marks heavier variants of tests
# that also run at a smaller size: `make test-all` runs them too.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25
test: $(STAMP) browser
	$(PYTEST) -m "not slow"

test-all: $(STAMP) browser
	$(PYTEST)

# Headless Chromium for the UI smoke test (tests/test_make_run.py); installed from Debian's
# packages when missing and running as root, else the browser test fails in CI.
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (Debian package) for the browser smoke test"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "warning: $(CHROMIUM) is missing and this is not root: the browser test will fail" >&2; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

torture: $(STAMP)
	$(BIN)/python -m tests.torture.run --trials $(or $(TRIALS),1000) --seed $(or $(SEED),1) --backend $(or $(BACKEND),local) --faults $(or $(FAULTS),0.05) --workers $(or $(WORKERS),2) --report RELIABILITY.md

# BENCH_ARGS: extra arguments, e.g. `make bench BENCH_ARGS="--only ingest memory"` or
# `make bench-spark BENCH_ARGS="--rounds 1 --datasets d1 d2"`.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

SPARK_VENV := bench/.spark-venv
bench-spark: $(STAMP)
	test -f $(SPARK_VENV)/.installed || { $(PYTHON) -m venv $(SPARK_VENV) && $(SPARK_VENV)/bin/python -m pip install --quiet 'pyspark==4.3.0' && touch $(SPARK_VENV)/.installed; }
	$(BIN)/python -m bench.spark_vs_lockgate --spark-python $(SPARK_VENV)/bin/python $(BENCH_ARGS)

clean:
	rm -rf .lockgate
