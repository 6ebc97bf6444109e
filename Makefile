# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install system run test lint unit bench clean cluster-test images

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "virtbus needs Python 3.11 or newer" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

system:
	@scripts/system-packages.sh

install: system $(STAMP)

# make run [PORT=4222] [STATE_DIR=DIR] [DOMAINS_DIR=DIR] [ARGS="more virtbus up options"]
run: install
	$(VENV)/bin/virtbus up $(if $(PORT),--nats-port $(PORT)) $(if $(STATE_DIR),--state-dir $(STATE_DIR)) $(if $(DOMAINS_DIR),--domains-dir $(DOMAINS_DIR)) $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q

# The two-host cluster of deploy/ (tests/deploy/test_cluster.py) with a larger
# load than `make test` gives it, and the chart's checks.
cluster-test: install
	VIRTBUS_CLUSTER_OPS=1000 $(VENV)/bin/pytest -q -s -p no:cacheprovider \
		tests/deploy/test_chart.py tests/deploy/test_cluster.py

# The fuzz suite (docs/fuzzing.md) for longer than its slice in `make test`, with a
# fresh random seed; FUZZ_ARGS=--save keeps what it finds as regression cases.
.PHONY: fuzz
FUZZ_SECONDS ?= 600
fuzz: install
	$(VENV)/bin/python -m tests.fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

# The soak (docs/soak.md): the local stack under mixed load, kill -9 and a full disk
# for SOAK_SECONDS (default ten minutes); `make test` runs a 40-second slice.
.PHONY: soak
SOAK_SECONDS ?= 600
soak: install
	$(VENV)/bin/python -m tests.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# One image per service and the agent, with podman from a debootstrap base
# (deploy/images/build.sh; long: not part of `make test`).
images:
	deploy/images/build.sh

bench: install
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
