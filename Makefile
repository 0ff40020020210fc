# LeviBot Assets: `make run` (install + materialize the nightly graph), `make test`, `make ui`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install system-deps run ui test test-fast benchmarks clean

$(BIN)/levibot: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/levibot

install: $(BIN)/levibot

system-deps:
	bash scripts/install_system_deps.sh

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# The nightly graph for the last complete UTC day: first the training window's data (14 days
# before it), then every asset of that day; prints the release summary at the end. The TFT gets
# a 2-minute budget here so the quickstart takes minutes, not a quarter of an hour (override it).
run: export LEVIBOT_TFT_MAX_MINUTES ?= 2
run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/levibot materialize --days 15 --select raw_ohlcv,features
	$(BIN)/levibot materialize --days 1

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

benchmarks: install
	$(BIN)/python benchmarks/backfill_overhead.py

clean:
	rm -rf $(VENV) *.egg-info
