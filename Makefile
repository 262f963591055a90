# recstream: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: help deps venv run test test-fast bench stack-up stack-down clean kcat-lib lock audit fuzz docs lint-imports

help:
	@echo "make run      - the recommender demo on the embedded local stack (Tansu + redis-server)"
	@echo "make test     - create the venv, install, run the whole suite (starts its own stack)"
	@echo "make bench    - benchmarks: table on stdout, JSON in bench/results/"
	@echo "make deps     - system packages (redis-server, redis-tools, docker-compose, libgomp1) via apt when missing"
	@echo "make lock     - re-resolve requirements.lock (every dependency pinned, with hashes) after editing pyproject.toml"
	@echo "make audit    - pip-audit the locked dependencies against the PyPI vulnerability service"
	@echo "make fuzz     - coverage-guided fuzzing of the message validators (atheris), 10 minutes"
	@echo "make docs     - the reference site from docs/ (mkdocs build --strict, into .site/)"
	@echo "make lint-imports - the architecture's import contracts (import-linter; also part of make test)"

# System packages: redis-server for the local stack (redis-cli from redis-tools joins a local Redis Cluster); docker-compose (1.29, no engine) validates the compose file;
# libgomp1 (OpenMP) for LightGBM, the learned ranker.
deps:
	@need=""; command -v redis-server >/dev/null || need="$$need redis-server"; \
	command -v redis-cli >/dev/null || need="$$need redis-tools"; \
	command -v docker-compose >/dev/null || need="$$need docker-compose"; \
	ldconfig -p 2>/dev/null | grep -q libgomp.so.1 || need="$$need libgomp1"; \
	if [ -n "$$need" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$need"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  else echo "missing:$$need -- install them (Debian/Ubuntu: sudo apt-get install$$need)"; exit 1; fi; \
	fi

# Every dependency comes from requirements.lock, pinned with hashes (pip refuses a file whose hash differs);
# the project itself is installed on top without touching them (--no-deps).
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import stream, schemas, confluent_kafka, redis, onnxruntime, river, torch, hypothesis, atheris, importlinter, mkdocs"
	touch $(STAMP)

# Extras stay in the lock (no --strip-extras): the venv's own pip (23.2 on Debian's Python 3.11) refuses a
# dependency's extras requirement, pip-audit's CacheControl[filecache], as "not pinned" in --require-hashes
# mode once a newer CacheControl is published, unless the lock pins that extras requirement itself.
lock:
	$(PY) -m pip install -q pip-tools
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --extra train --extra dev \
	  --constraint constraints.txt --find-links /opt/wheels -o requirements.lock pyproject.toml

# The vulnerability service is PyPI's JSON API; a package it cannot look up is listed as skipped, not passed.
audit: venv
	@set -o pipefail; $(BIN)/pip-audit -r requirements.lock --require-hashes --progress-spinner off 2>&1 | tee .audit.log; rc=$$?; \
	if grep -q "known vulnerabilit" .audit.log && ! grep -q "No known vulnerabilities" .audit.log; then exit 1; fi; \
	if [ $$rc -ne 0 ]; then echo "pip-audit could not reach its vulnerability service (exit $$rc): nothing audited"; fi; \
	echo "audited: $$(grep -c 'could not be audited' .audit.log) of the locked packages could not be looked up (skipped, not passed)"

fuzz: venv
	cd $(VENV) && $(CURDIR)/$(BIN)/python $(CURDIR)/tests/fuzz_validate.py -max_total_time=600

venv: $(STAMP)

run: deps venv
	$(BIN)/recstream demo --events 20000 --rate 1000

test: deps venv
	$(BIN)/python -m pytest -q

docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "docs built in .site/ (open .site/index.html)"

lint-imports: venv
	$(BIN)/lint-imports

test-fast: venv
	$(BIN)/python -m pytest -q -m "not integration and not slow"

bench: deps venv
	$(BIN)/python -m bench.run

stack-up: venv
	$(BIN)/recstream stack up

stack-down: venv
	$(BIN)/recstream stack down

clean:
	-$(BIN)/recstream stack down 2>/dev/null
	rm -rf $(VENV) .state *.egg-info .site

# Debian's kcat (librdkafka 2.0.2) cannot parse the local broker's ApiVersions reply; point it at the
# newer librdkafka inside the confluent-kafka wheel: LD_LIBRARY_PATH=.state/kcat-lib kcat -b localhost:19092 ...
kcat-lib: venv
	mkdir -p .state/kcat-lib
	ln -sf "$$(ls $(CURDIR)/$(VENV)/lib/python3*/site-packages/confluent_kafka.libs/librdkafka*.so*)" .state/kcat-lib/librdkafka.so.1
	@echo "LD_LIBRARY_PATH=.state/kcat-lib kcat -b localhost:19092 -C -t recstream.recommendations -e"
