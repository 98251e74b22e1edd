# xentlab: every target installs what it needs first (a .venv made by `make install`, idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
GPU    ?=
comma  := ,
EXTRAS := dev$(if $(GPU),$(comma)gpu)
STAMP  := $(VENV)/.installed$(if $(GPU),-gpu)
RAY_VENV := $(VENV)/ray
ARGS   ?=
SWEEP  ?= losses
HOST   ?= 127.0.0.1
PORT   ?= 5000
STORE  := sqlite:///$(CURDIR)/outputs/mlflow.db
SERVER_DIR ?= outputs/server
NODES  ?= 2
RAY_PORT ?= 6379
CHROMIUM ?= /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
# The minimum Python of requires-python (e.g. 3.11), which `make lint` holds the code to.
PYTHON_MIN := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\).*/\1/p' pyproject.toml)

.DEFAULT_GOAL := help
.PHONY: help install train sweep compare ui test test-all test-ui test-ray bench smoke-gpu lint clean
.PHONY: server server-stop ray-cluster ray-cluster-stop

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install xentlab with its dev tools (idempotent); GPU=1 adds CUDA wheels

$(STAMP): pyproject.toml setup.py   # setup.py maps conf/ into the package (xentlab.conf)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# hydra-optuna-sweeper (earlier dev extra) pins Optuna 2.10; xentlab's own sweeper drives Optuna 4 now
	@$(BIN)/pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true
	mkdir -p outputs
	touch $(STAMP)

train: install ## train the default experiment (seed CNN on digits); extra overrides in ARGS="..."
	$(BIN)/xentlab-train $(ARGS)

sweep: install ## run a sweep preset from conf/sweep/ (SWEEP=losses|weighting|seeds|hardware) and its report
	$(BIN)/xentlab-train +sweep=$(SWEEP) $(ARGS)

compare: install ## comparison report of the latest sweep (terminal + outputs/reports/)
	$(BIN)/xentlab-compare $(ARGS)

ui: install ## MLflow UI on http://$(HOST):$(PORT) over outputs/mlflow.db; prints the latest sweep's verdict link
	mkdir -p outputs
	@$(BIN)/python -m xentlab.cli.links --tracking-uri $(STORE) --host $(HOST) --port $(PORT)
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT)

server: install ## a team's MLflow server on PostgreSQL under outputs/server/ (HOST, PORT); prints its tracking.uri
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "installing Debian's postgresql (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }
	@$(BIN)/python -c "import psycopg2" 2>/dev/null || $(BIN)/pip install --quiet -e ".[server]"
	@$(BIN)/python -m xentlab.cli.server start --dir $(SERVER_DIR) --host $(HOST) --port $(PORT)

server-stop: install ## stop make server's MLflow server and PostgreSQL (the data stay for the next make server)
	@$(BIN)/python -m xentlab.cli.server stop --dir $(SERVER_DIR)

ray-cluster: $(RAY_VENV)/.installed ## a Ray cluster on this machine: a head + NODES-1 worker raylets (RAY_PORT, .venv/ray)
	@$(RAY_VENV)/bin/python -m xentlab.cli.ray_cluster start --nodes $(NODES) --port $(RAY_PORT)

ray-cluster-stop: $(RAY_VENV)/.installed ## stop make ray-cluster's nodes (only those: other Ray runtimes go on)
	@$(RAY_VENV)/bin/python -m xentlab.cli.ray_cluster stop --port $(RAY_PORT)

test: install ## the fast test suite (what .ci/run calls), one worker per core (at most 4)
	$(BIN)/python -m pytest -m "not slow and not ui" -q -n auto --maxprocesses 4 --dist worksteal --durations=20

test-all: install ## every test, slow ones included (not the browser test: make test-ui), then make test-ray
	$(BIN)/python -m pytest -m "not ui" -q -n auto --maxprocesses 4 --dist worksteal
	$(MAKE) test-ray

test-ui: install ## the MLflow UI in a real Chromium: a tiny sweep, its parent's page, report.html (outputs/ui/*.png)
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium (apt-get)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install --quiet -e ".[ui]"
	XENTLAB_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -m ui tests/test_ui.py -q -p no:cacheprovider

test-ray: install $(RAY_VENV)/.installed ## the launcher and Ray-cluster tests with the Ray extra, in .venv/ray (Ray pins cloudpickle<3)
	$(RAY_VENV)/bin/python -m pytest tests/test_launchers.py tests/test_ray_cluster.py -q

$(RAY_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/pip install --quiet -e ".[dev,ray]"
	touch $@

smoke-gpu: install ## GPU check: devices, seed CNN and char LSTM on GPU vs CPU (samples/s, ratio, test metrics)
	$(BIN)/python -m xentlab.cli.smoke_gpu $(ARGS)

bench: install ## benchmarks -> outputs/bench/*.json + summary.md (BENCH_ARGS=--quick: small sizes; --smoke: tiny)
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

lint: install ## ruff over sources, tests and benchmarks; vermin: nothing needs a Python newer than requires-python's
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/vermin --no-tips --violations -t=$(PYTHON_MIN)- src tests benchmarks

clean: ## remove run outputs (keeps the MLflow store) and caches
	rm -rf outputs/runs outputs/multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
