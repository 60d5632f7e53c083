# One way to run each thing; CI (.ci/run, .github/workflows) calls these same targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:12])' 2>/dev/null)

# Caches that outlive a clone (Maven repository, Go-built tools); see tests/harness/cache.py.
CACHE := $(or $(TIDE_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tide)
TOOLS := $(CACHE)/tools

# CLIs built from the Go module proxy at pinned versions, linked into ./bin.
HELM_VERSION       := v3.22.0
ACTIONLINT_VERSION := v1.7.12

# Debian packages the test harness runs: Java 17 + Maven (Kafka from Maven
# Central), PostgreSQL, RabbitMQ, and promtool for alert-rule tests.
SYSTEM_PACKAGES := openjdk-17-jre-headless maven postgresql rabbitmq-server prometheus

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: system-deps
system-deps: ## install the Debian packages the brokers need (apt, needs root or sudo)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing: $$missing"; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "system packages present: $(SYSTEM_PACKAGES)"; fi

.PHONY: setup
setup: $(STAMP) ## create .venv and install Tide with its dev and infra extras

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tide needs Python 3.11+, found " + sys.version)'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[infra,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

.PHONY: tools
tools: bin/helm bin/actionlint ## build helm and actionlint with `go install` (pinned) into the cache, link them into ./bin

bin/actionlint: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.24+ (https://go.dev/dl) to build actionlint"; exit 1; }
	@mkdir -p bin $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)
	@[ -x $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)/actionlint ] || { echo "building actionlint $(ACTIONLINT_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/actionlint-$(ACTIONLINT_VERSION) go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); }
	@ln -sf $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)/actionlint $@

bin/helm: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.24+ (https://go.dev/dl) to build helm"; exit 1; }
	@mkdir -p bin $(TOOLS)/helm-$(HELM_VERSION)
	@[ -x $(TOOLS)/helm-$(HELM_VERSION)/helm ] || { echo "building helm $(HELM_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/helm-$(HELM_VERSION) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@ln -sf $(TOOLS)/helm-$(HELM_VERSION)/helm $@

.PHONY: test
test: setup tools ## unit, integration and local chaos suites against real brokers (started here unless TIDE_* are set)
	$(PY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup tools ## only the unit tier (no brokers)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

.PHONY: lint
lint: setup bin/actionlint ## ruff (lint + format check), mypy --strict, actionlint on the workflows
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	bin/actionlint

.PHONY: fmt
fmt: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: bench
bench: setup ## benchmarks against bare clients, same brokers, one run (BENCH_ARGS="--write" updates bench/results.md)
	$(PY) -m bench.producer $(BENCH_ARGS)

.PHONY: brokers
brokers: setup ## start Kafka, RabbitMQ, PostgreSQL and the registry here and print their TIDE_* variables
	$(PY) -m tests.harness

.PHONY: clean
clean: ## remove the virtualenv and caches in the work tree (not ~/.cache/tide)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
