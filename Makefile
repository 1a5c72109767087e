# vramwatch: `make demo` runs the nightly end to end on this machine; `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
ROOT := $(CURDIR)

# Airflow runs from the repo: SQLite metadata DB, our dags/ and plugins/, no examples.
export AIRFLOW_HOME := $(ROOT)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN := sqlite:///$(ROOT)/airflow_home/airflow.db
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export GX_ANALYTICS_ENABLED := False
export PYTHONPATH := $(ROOT)/include
DEMO_ENV := VRAMWATCH_MATRIX=demo
# Pure Python (validation, detection, migrations): spread over the cores, 2 workers halve it on 2 cores.
UNIT_TESTS := $(PY) -m pytest -ra -n auto --maxprocesses=4 --durations=5 tests/unit -m

.PHONY: help install engine models airflow-db demo test test-unit test-containers lint benchmarks clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@echo "==> [1/5] Python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

install: $(VENV)/.installed ## the Python environment (.venv) from requirements.txt and constraints.txt

engine: install ## build the llama-cpp-python engine (CUDA where nvcc and a GPU exist, else CPU; cached)
	@echo "==> [2/5] llama-cpp-python engine (CUDA where nvcc and a GPU exist, else CPU; cached after the first build)"
	@# ccache before the first compile: it fills the store that later builds (other commits, the tests') hit
	$(PY) scripts/ensure_tools.py ccache
	$(DEMO_ENV) $(VENV)/bin/vramwatch builds build --matrix demo

models: engine ## the demo matrix's tiny synthetic models, quantized by the engine (cached)
	@echo "==> [3/5] Tiny shape-true synthetic models, quantized by the engine (cached)"
	$(VENV)/bin/vramwatch models prepare --matrix demo

airflow-db: install ## Airflow's metadata DB (SQLite under airflow_home/)
	@echo "==> [4/5] Airflow metadata DB (SQLite under airflow_home/)"
	@mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@# the GPU tasks' pool: without it a real scheduler leaves them "scheduled" forever (dags test ignores pools)
	$(VENV)/bin/airflow pools set gpu 1 "GPU benches: one at a time" > /dev/null

demo: models airflow-db ## the nightly DAG end to end on the demo matrix -> reports/latest.{md,html}
	@echo "==> [5/5] airflow dags test llamacpp_nightly (matrix: demo)"
	$(DEMO_ENV) $(VENV)/bin/airflow dags test llamacpp_nightly --conf '{"force": true}'
	@test -s reports/latest.md && test -s reports/latest.html
	@echo "demo done: reports/latest.md and reports/latest.html"

test: models airflow-db lint ## the whole suite: unit, DAG integrity, end to end (what CI runs)
	$(PY) scripts/ensure_tools.py
	@# the file a deployment starts from, checked where the CI log shows it (placeholder secrets: they must be set)
	AIRFLOW_JWT_SECRET=placeholder AIRFLOW_API_SECRET_KEY=placeholder AIRFLOW_FERNET_KEY=placeholder docker-compose -f docker-compose.yaml config -q
	@echo "docker-compose config: docker-compose.yaml is valid"
	$(UNIT_TESTS) "unit and not engine"
	@# the rest one at a time (compiles use every core, Airflow runs share airflow_home); the slowest tests close
	@# the log, so a test that got slower shows in CI
	$(PY) -m pytest -ra --durations=15 -m "engine or not unit" tests

test-containers: install ## only the images and the compose stack under podman, with a night in containers (make test runs it too)
	$(PY) scripts/ensure_tools.py podman aardvark-dns mmdebstrap docker-compose
	$(PY) -m pytest -ra -s tests/containers

test-unit: lint ## the fast loop: unit tests that need no engine build, Airflow run or browser, nor take seconds (`slow`)
	$(UNIT_TESTS) "unit and not engine and not slow"

lint: install ## ruff (undefined names, unused imports, import order) and import-linter (layers, cycles)
	$(VENV)/bin/ruff check include dags plugins tests benchmarks scripts
	$(VENV)/bin/lint-imports --no-cache

benchmarks: install ## print the store timings and the history reads' (report, scan, page) on 3 years of history
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_reads.py

clean: ## remove what demo and test wrote here (builds, models, reports, data, Airflow's home)
	rm -rf airflow_home reports data builds models
