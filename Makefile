# Two commands do all set-up on a fresh machine: `make up` and `make test`.
# Everything is pinned in versions.env; tools and environments are cached outside the
# clone in $(CACHE), keyed by those pins, so a second run rebuilds nothing.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

include versions.env

CACHE ?= $(or $(TODO_CLOUD_CACHE),$(HOME)/.cache/todo-cloud)
export TODO_CLOUD_CACHE := $(CACHE)
UV_HOME := $(CACHE)/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never
# Bytecode: compiled for the whole environment at sync, and written for the project's own
# modules on first import. A machine that sets PYTHONDONTWRITEBYTECODE would otherwise
# recompile every module in every process (the kubernetes client alone: 2.4 s instead of 1.2
# at each ansible module run).
export UV_COMPILE_BYTECODE := 1
unexport PYTHONDONTWRITEBYTECODE
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Offline tiers; `online` runs only in GitHub Actions (rung L4).
PYTEST_MARKERS ?= not online
PYTEST_ARGS ?=
# More ansible-playbook arguments for `make up` (e.g. ANSIBLE_ARGS="--tags app -v").
ANSIBLE_ARGS ?=
# Test files run on two pytest-xdist workers (conftest.py says which files share one);
# PYTEST_WORKERS=0 runs them in this process, one after another.
PYTEST_WORKERS ?= 2

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: up
up: bootstrap ## the Todo app on a local single-node Kubernetes: site.yml -i inventories/local (a second run changes nothing)
	@$(VENV)/bin/ansible-playbook site.yml -i inventories/local $(ANSIBLE_ARGS)

.PHONY: down
down: $(VENV)/.synced ## remove the local cluster `make up` made, with its data
	@$(VENV)/bin/ansible-playbook playbooks/teardown.yml -i inventories/local -e cluster_teardown_confirm=todo-local

.PHONY: test
test: bootstrap lint ## all offline test tiers (unit, integration, ...), after the linters
	@start=$$(date +%s); \
	$(PY) -m pytest -m "$(PYTEST_MARKERS)" -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS); \
	echo "make test: pytest took $$(( $$(date +%s) - start ))s"

.PHONY: bootstrap
bootstrap: system-deps $(VENV)/.synced tools kafka ## Debian packages, Python environment, Go tools and Kafka's jars at the pinned versions

.PHONY: system-deps
system-deps:
	@scripts/system-deps.sh

$(UV):
	@echo "bootstrap: installing uv $(UV_VERSION) into $(UV_HOME)"
	@python$(PYTHON_VERSION) -m venv $(UV_HOME)
	@$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	@echo "bootstrap: syncing $(VENV) from uv.lock"
	@$(UV) sync --locked --python python$(PYTHON_VERSION) --quiet
	@touch $@

.PHONY: tools
tools: ## build (or find cached) the Go tools pinned in versions.env
	@command -v go >/dev/null || { echo "bootstrap: Go $(GO_MIN_VERSION)+ is required (go not found)" >&2; exit 1; }
	@python$(PYTHON_VERSION) scripts/toolchain.py

.PHONY: kafka
kafka: system-deps ## fetch (or find cached) Apache Kafka's broker jars (KAFKA_VERSION) from Maven Central
	@python$(PYTHON_VERSION) scripts/kafka_jars.py >/dev/null

.PHONY: lint
lint: $(VENV)/.synced ## ruff, yamllint, ansible-lint (production profile), hadolint, actionlint
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check --quiet .
	@$(VENV)/bin/yamllint --strict .
	@$(VENV)/bin/ansible-lint --profile production --strict -q
	@python$(PYTHON_VERSION) scripts/images.py lint
	@python$(PYTHON_VERSION) scripts/toolchain.py actionlint >/dev/null
	@.tools/bin/actionlint

.PHONY: images
images: system-deps ## build the four service images with podman (tags: the commit and `local`; layer cache)
	@python$(PYTHON_VERSION) scripts/images.py build

.PHONY: platform-images
platform-images: system-deps ## build the local cluster's PostgreSQL, Kafka, daprd and Dapr scheduler images (tags: their pins; layer cache)
	@python$(PYTHON_VERSION) scripts/images.py build-platform

.PHONY: dev
dev: bootstrap ## run the whole app in process mode (PostgreSQL, Kafka, daprd per service, nginx); Ctrl-C stops it
	@$(PY) -m testkit.stack

.PHONY: controlplane
controlplane: bootstrap ## start the test control plane and print its kubeconfig (stop: see its output)
	@$(PY) -m testkit.controlplane up --nodes 2

.PHONY: bench
bench: bootstrap ## benchmarks: control-plane start, rollout_wait failure detection, api throughput, SSE gateway, rollback time
	@$(PY) -m bench.rollout_wait
	@$(PY) -m bench.api
	@$(PY) -m bench.gateway --e2e 1000
	@$(PY) -m bench.rollback

.PHONY: clean
clean: ## remove the clone's environment and tool links (the cache stays)
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
