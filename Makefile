# Two commands on a fresh machine: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE := .cache
export PYTHONUNBUFFERED := 1

.PHONY: help venv test test-unit demo clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test]"
	@touch $@

venv: $(VENV)/.installed ## Create the virtualenv and install the package with its test extras

test-unit: venv ## Unit tests only (no broker, no service)
	$(PY) -m pytest tests/unit -q

test: venv kafka-jars ## Set up everything, then run the whole test suite
	$(PY) -m pytest tests -q

clean: ## Remove the virtualenv and caches (jars are kept in .cache)
	rm -rf $(VENV) .pytest_cache

# ---- Kafka (local broker assembled from Maven Central) ----------------------

# ---- Scoring service --------------------------------------------------------

# ---- Demo --------------------------------------------------------------------

# ---- Flink / Prism -----------------------------------------------------------

# ---- Benchmark ---------------------------------------------------------------
