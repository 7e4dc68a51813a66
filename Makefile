# netdevkit: two entry points for a fresh machine.
#   make demo  - virtualenv in .venv, install, run the main job
#   make test  - virtualenv with test extras, Debian peers, lint, type check, whole suite,
#                then the kernel matrix (make test-kernels)
# Both are idempotent: a second run reuses .venv and installed packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Real peers the tests and the bench start themselves (never as services).
DEBIAN_PEERS := sockperf memcached redis-server redis-tools iproute2 wrk openssh-client openssh-server
# What the kernel matrix needs: qemu (TCG), a static busybox for the initramfs,
# depmod, cpio; the kernels themselves come through a private apt configuration.
KERNEL_TOOLS := qemu-system-x86 busybox-static kmod cpio flex bison libelf-dev libssl-dev bc
# Checkers the tests run on shipped files: promtool (contrib/ alert rules) comes with
# Debian's prometheus (installed without recommends; it is never started as a service).
CHECK_TOOLS := prometheus

.PHONY: demo test lint typecheck pytest venv debian-peers kernel-tools test-kernels bench clean

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

kernel-tools:
	@missing=""; for p in $(KERNEL_TOOLS) $(CHECK_TOOLS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: venv
	$(BIN)/mypy

pytest: venv debian-peers kernel-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The kernel matrix: Debian's 6.1, 6.12 and newest 7.x kernels under qemu, the
# `matrix` tests inside each, one table (docs/kernels.md). Kernels are cached
# under .cache/kernels; KERNEL_ARGS passes options (e.g. --kernel 7.x).
test-kernels: venv debian-peers kernel-tools
	$(BIN)/python tests/kernels/matrix.py $(KERNEL_ARGS)

test: lint typecheck pytest test-kernels

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
