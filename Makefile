# Two commands on a fresh machine: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE := .cache
export PYTHONUNBUFFERED := 1

.PHONY: help venv lint test test-unit demo clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test]"
	@touch $@

venv: $(VENV)/.installed ## Create the virtualenv and install the package with its test extras

lint: venv ## ruff (ruff.toml) over the tree, mypy (mypy.ini) over the pure control logic
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-unit: venv ## Unit tests only (no broker, no service; includes the Beam glue on the FnApiRunner)
	$(PY) -m pytest tests/unit -q

test: lint kafka-jars nginx prometheus redis flink-dist $(VENV)/.bench-installed test-beam-latest ## Lint, set up everything, then run the whole test suite (the bench extra too: its smoke test runs)
	$(PY) -m pytest tests -q

# ---- The public transform on the newest Beam ----------------------------------
# The job stays on the pinned Beam (its Flink job server must match); the public transform
# (transforms.enrichment) is also checked on the newest release, in a venv of its own.
BEAM_LATEST ?= 2.77.0
VENV_LATEST := .venv-beam-latest

$(VENV_LATEST)/.installed: setup.py
	$(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install -q --upgrade pip
	BEAM_VERSION=$(BEAM_LATEST) $(VENV_LATEST)/bin/pip install -q -e ".[test]"
	@touch $@

.PHONY: test-beam-latest
test-beam-latest: $(VENV_LATEST)/.installed ## The public transform's FnApiRunner tests on apache-beam BEAM_LATEST (2.77.0)
	$(VENV_LATEST)/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_throttled_enrichment.py tests/unit/test_beam_glue.py

clean: ## Remove the virtualenvs and caches (jars are kept in .cache)
	rm -rf $(VENV) .venv-beam-latest .pytest_cache

# ---- Kafka (local broker assembled from Maven Central) ----------------------
KAFKA_PORT ?= 9092
KAFKA_WORKDIR ?= $(CACHE)/run/kafka

.PHONY: kafka-jars kafka-up kafka-down kafka-status

kafka-jars: venv ## Fetch the Kafka broker jars into .cache/kafka once (needs java >= 17 and mvn)
	$(PY) -m testbed.kafka.broker fetch

kafka-up: venv ## Start a local Kafka broker on 127.0.0.1:KAFKA_PORT (default 9092), data in .cache/run/kafka
	$(PY) -m testbed.kafka.broker up --port $(KAFKA_PORT) --workdir $(KAFKA_WORKDIR)

kafka-down: venv ## Stop the local Kafka broker (SIGTERM, SIGKILL after 20 s)
	$(PY) -m testbed.kafka.broker down --workdir $(KAFKA_WORKDIR)

kafka-status: venv ## Tell whether the local Kafka broker is running
	@$(PY) -m testbed.kafka.broker status --workdir $(KAFKA_WORKDIR)

# ---- Scoring service --------------------------------------------------------
SCORING_PORT ?= 8080
SCORING_ARGS ?=
SCORING_RUN := $(CACHE)/run
SCORING_PID := $(SCORING_RUN)/scoring.pid
SCORING_LOG := $(SCORING_RUN)/scoring.log
# True when the pid file names a live scoring service (not a recycled pid).
scoring_alive = [ -f $(SCORING_PID) ] && ps -p "$$(cat $(SCORING_PID))" -o args= 2>/dev/null | grep -q testbed.scoring

.PHONY: service-up service-down

service-up: venv ## Start the scoring service in the background (SCORING_PORT, SCORING_ARGS="--rate 500 ...")
	@mkdir -p $(SCORING_RUN)
	@if $(scoring_alive); then echo "scoring service already running (pid $$(cat $(SCORING_PID)), log $(SCORING_LOG))"; exit 0; fi; \
	nohup $(PY) -m testbed.scoring --port $(SCORING_PORT) $(SCORING_ARGS) > $(SCORING_LOG) 2>&1 & \
	pid=$$!; echo $$pid > $(SCORING_PID); \
	for _ in $$(seq 200); do \
		if grep -m1 '^scoring service listening on ' $(SCORING_LOG); then exit 0; fi; \
		if ! kill -0 $$pid 2>/dev/null; then cat $(SCORING_LOG) >&2; rm -f $(SCORING_PID); exit 1; fi; \
		sleep 0.1; \
	done; \
	kill $$pid; rm -f $(SCORING_PID); echo "scoring service did not start within 20 s; see $(SCORING_LOG)" >&2; exit 1

service-down: ## Stop the background scoring service (SIGTERM, SIGKILL after 10 s)
	@if $(scoring_alive); then \
		pid=$$(cat $(SCORING_PID)); kill $$pid; \
		for _ in $$(seq 100); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
		if kill -0 $$pid 2>/dev/null; then kill -9 $$pid; fi; \
		echo "scoring service stopped (pid $$pid)"; \
	else echo "scoring service not running"; fi; \
	rm -f $(SCORING_PID)

# ---- Demo --------------------------------------------------------------------
demo: venv kafka-jars ## Start Kafka + scoring service, produce the seed's workload, drain it, print the summary, stop
	mkdir -p $(CACHE)/run
	$(PY) -m testbed.demo

# ---- Flink / Prism -----------------------------------------------------------
FLINK_REST_PORT ?= 8081
KAFKA_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)
SCORING_URL ?= http://127.0.0.1:$(SCORING_PORT)/score
CHECKPOINT_MS ?= 5000
RUN_ARGS ?=

.PHONY: flink-jar kafka-expansion-jar prism flink-dist flink-up flink-down run-flink

flink-jar: venv ## Build the Beam Flink 1.19 job-server jar into .cache/flink once (needs java and mvn)
	$(PY) -m testbed.flink.jobserver build

kafka-expansion-jar: venv ## Build the KafkaIO expansion service + a Flink job server with KafkaIO into .cache/kafka-expansion once (--kafka_io=java)
	$(PY) -m testbed.kafka.expansion build

prism: venv ## Build the Prism runner binary into .cache/prism once (needs go)
	$(PY) -m testbed.prism.runner build

nginx: venv ## Unpack Debian's nginx into .cache/nginx once (a rate limiter we did not write, for tests and the benchmark)
	$(PY) -m testbed.limiters.nginx build

prometheus: venv ## Unpack Debian's prometheus (server and promtool) into .cache/prometheus once (scrapes a drain in the tests)
	$(PY) -m testbed.prometheus.server build

redis: venv ## Unpack Debian's redis-server (and the libraries it needs) into .cache/redis once (the fleet quota's coordinator in the tests)
	$(PY) -m testbed.redis.server build

flink-dist: venv ## Install the Flink 1.19 distribution (PyPI's apache-flink) into .flink-venv once: the session cluster of flink-up and the failover tests
	$(PY) -c "from testbed.flink import cluster; cluster.install()"

flink-up: venv flink-jar ## Start a local Flink 1.19 session cluster on localhost:FLINK_REST_PORT (default 8081)
	$(PY) -m testbed.flink.cluster up --rest-port $(FLINK_REST_PORT)

flink-down: venv ## Stop the local Flink session cluster
	$(PY) -m testbed.flink.cluster down --rest-port $(FLINK_REST_PORT)

run-flink: venv flink-jar ## Stream the job on the local Flink cluster (needs flink-up, kafka-up, service-up; Ctrl-C stops; RUN_ARGS="...")
	$(PY) -m pipelines.enrich_payments --runner=FlinkRunner \
		--flink_master=localhost:$(FLINK_REST_PORT) --flink_version=1.19 \
		--flink_job_server_jar=$$($(PY) -m testbed.flink.jobserver build) \
		--environment_type=LOOPBACK --streaming --checkpointing_interval=$(CHECKPOINT_MS) \
		--bootstrap_servers=$(KAFKA_BOOTSTRAP) --service_url=$(SCORING_URL) $(RUN_ARGS)

# ---- Benchmark ---------------------------------------------------------------
BENCH_ARGS ?=
.PHONY: bench bench-quick

$(VENV)/.bench-installed: setup.py $(VENV)/.installed
	$(PIP) install -q -e ".[bench]"
	@touch $@

bench: venv kafka-jars $(VENV)/.bench-installed ## Full benchmark: ours vs naive / pool+Retry / RequestResponseIO (~30 min), results in bench-results/<timestamp>/
	$(PY) -m testbed.bench $(BENCH_ARGS)

bench-quick: venv kafka-jars $(VENV)/.bench-installed ## Short benchmark (~7 min): same rates, shorter windows, fewer clients in S2/S3, S4 60 s
	$(PY) -m testbed.bench --quick $(BENCH_ARGS)
