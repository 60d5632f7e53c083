#!/usr/bin/env bash
# Builds upstream operators from the Go module proxy at pinned versions into OUT_DIR:
# keda-admission-webhooks, keda-operator and keda-adapter (KEDA's cmd/webhooks, cmd/operator
# and cmd/adapter, the metrics API server), cnpg-manager (CloudNativePG's cmd/manager, whose
# `controller` subcommand serves its webhooks), prometheus-operator-<version>, the
# promtool-<version> of the Prometheus it deploys and rabbitmq-cluster-operator-<version>.
#
# `go install M/cmd/x@V` is refused when M's go.mod has replace directives (KEDA pins
# k8s.io and Prometheus that way). So each binary is built in a throwaway module that
# requires M at V and repeats M's own replace directives, so the dependency graph is the
# one upstream builds with.
set -euo pipefail
keda_version=${1:?KEDA version, e.g. v2.17.2}
cnpg_version=${2:?CloudNativePG version, e.g. v1.27.0}
prometheus_operator_version=${3:?prometheus-operator version, e.g. v0.85.0}
prometheus_version=${4:?the Prometheus version that operator deploys, e.g. v3.5.0}
rabbitmq_operator_version=${5:?RabbitMQ cluster operator version, e.g. v2.16.0}
out=${6:?output directory}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# build NAME MODULE VERSION PACKAGE LDFLAGS [MODULE@VERSION...]: PACKAGE of MODULE@VERSION into
# $out/NAME. A replace of MODULE's go.mod that points at a local path (a submodule in the
# same repository) cannot be repeated; that submodule is required at its published version
# instead, from the trailing arguments.
build() {
  local name=$1 module=$2 version=$3 package=$4 ldflags=$5
  shift 5
  [ -x "$out/$name" ] && return 0
  echo "building $name from $module@$version (Go module proxy; several minutes on 2 cores)"
  local gomod
  gomod=$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  mkdir -p "$work/$name"
  {
    echo "module tide.local/$name"
    echo "go 1.24"
    echo "require $module $version"
    for extra in "$@"; do echo "require ${extra%@*} ${extra#*@}"; done
    # Single-line `replace a [v] => b v` and the lines of a `replace ( ... )` block alike,
    # to published modules only.
    sed -e 's#//.*##' "$gomod" |
      sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:](]\{1,\}\)\([[:space:]]\{1,\}v[^[:space:]]*\)\{0,1\}[[:space:]]\{1,\}=>[[:space:]]\{1,\}\([^.[:space:]][^[:space:]]*\)[[:space:]]\{1,\}\(v[^[:space:]]*\).*#replace \2\3 => \4 \5#p'
  } >"$work/$name/go.mod"
  (cd "$work/$name" && go build -trimpath -ldflags "$ldflags" -o "$out/$name.part" "$package")
  mv "$out/$name.part" "$out/$name"
}

build keda-admission-webhooks github.com/kedacore/keda/v2 "$keda_version" \
  github.com/kedacore/keda/v2/cmd/webhooks \
  "-X github.com/kedacore/keda/v2/version.Version=${keda_version#v}"
build keda-operator github.com/kedacore/keda/v2 "$keda_version" \
  github.com/kedacore/keda/v2/cmd/operator \
  "-X github.com/kedacore/keda/v2/version.Version=${keda_version#v}"
build keda-adapter github.com/kedacore/keda/v2 "$keda_version" \
  github.com/kedacore/keda/v2/cmd/adapter \
  "-X github.com/kedacore/keda/v2/version.Version=${keda_version#v}"
build cnpg-manager github.com/cloudnative-pg/cloudnative-pg "$cnpg_version" \
  github.com/cloudnative-pg/cloudnative-pg/cmd/manager \
  "-X github.com/cloudnative-pg/cloudnative-pg/pkg/versions.buildVersion=${cnpg_version#v}"
# Its go.mod replaces pkg/apis/monitoring and pkg/client with their directories; both are
# published as modules of their own at the same version.
po=github.com/prometheus-operator/prometheus-operator
build "prometheus-operator-$prometheus_operator_version" $po "$prometheus_operator_version" \
  $po/cmd/operator "-X github.com/prometheus/common/version.Version=${prometheus_operator_version#v}" \
  "$po/pkg/apis/monitoring@$prometheus_operator_version" "$po/pkg/client@$prometheus_operator_version"
# promtool of the Prometheus the operator deploys: Debian's is built without Kubernetes
# service discovery, so it cannot parse the configuration the operator generates.
# Prometheus vMAJOR.MINOR.PATCH is published as the Go module v0.(MAJOR*100+MINOR).PATCH.
IFS=. read -r major minor patch <<<"${prometheus_version#v}"
build "promtool-$prometheus_version" github.com/prometheus/prometheus "v0.$((major * 100 + minor)).$patch" \
  github.com/prometheus/prometheus/cmd/promtool \
  "-X github.com/prometheus/common/version.Version=${prometheus_version#v}"
build "rabbitmq-cluster-operator-$rabbitmq_operator_version" github.com/rabbitmq/cluster-operator/v2 \
  "$rabbitmq_operator_version" github.com/rabbitmq/cluster-operator/v2 ""
