# netdevkit: two entry points for a fresh machine.
#   make demo  - virtualenv in .venv, install, run the main job
#   make test  - virtualenv with test extras, Debian peers, lint, type check, whole suite
# Both are idempotent: a second run reuses .venv and installed packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Real peers the tests and the bench start themselves (never as services).
DEBIAN_PEERS := sockperf memcached redis-server redis-tools iproute2 wrk

.PHONY: demo test lint typecheck pytest venv debian-peers bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Installs only what is missing; needs root (CI and the tests run as root).
debian-peers:
	@missing=""; for p in $(DEBIAN_PEERS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: venv
	$(BIN)/mypy

pytest: venv debian-peers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The main job: every mode against real servers in a throw-away veth testbed,
# about 2 minutes; prints the table and where the report, plots and JSON are.
demo: venv debian-peers
	$(BIN)/netdevkit bench --quick

# The speed targets of benchmarks/ (results in benchmarks/results/).
bench: venv debian-peers
	$(BIN)/python benchmarks/bench_dump.py
	$(BIN)/python benchmarks/bench_busypoll.py
	$(BIN)/python benchmarks/bench_devmem.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
