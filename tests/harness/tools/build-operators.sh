#!/usr/bin/env bash
# Builds KEDA's and CloudNativePG's binaries from the Go module proxy at pinned versions into
# OUT_DIR: keda-admission-webhooks, keda-operator and keda-adapter (KEDA's cmd/webhooks,
# cmd/operator and cmd/adapter, the metrics API server) and cnpg-manager (CloudNativePG's
# cmd/manager, whose `controller` subcommand serves its webhooks).
#
# `go install M/cmd/x@V` is refused when M's go.mod has replace directives (KEDA pins
# k8s.io and Prometheus that way). So each binary is built in a throwaway module that
# requires M at V and repeats M's own replace directives, so the dependency graph is the
# one upstream builds with.
set -euo pipefail
keda_version=${1:?KEDA version, e.g. v2.17.2}
cnpg_version=${2:?CloudNativePG version, e.g. v1.27.0}
out=${3:?output directory}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# build NAME MODULE VERSION PACKAGE LDFLAGS: PACKAGE of MODULE@VERSION into $out/NAME.
build() {
  local name=$1 module=$2 version=$3 package=$4 ldflags=$5
  [ -x "$out/$name" ] && return 0
  echo "building $name from $module@$version (Go module proxy; several minutes on 2 cores)"
  local gomod
  gomod=$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  if grep -q '=>[[:space:]]*\.' "$gomod"; then
    echo "$module@$version replaces a module with a local path; it cannot be built from the proxy" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  {
    echo "module tide.local/$name"
    echo "go 1.24"
    echo "require $module $version"
    # Single-line `replace a [v] => b v` and the lines of a `replace ( ... )` block alike.
    sed -e 's#//.*##' "$gomod" |
      sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:](]\{1,\}\)\([[:space:]]\{1,\}v[^[:space:]]*\)\{0,1\}[[:space:]]\{1,\}=>[[:space:]]\{1,\}\([^[:space:]]\{1,\}\)[[:space:]]\{1,\}\(v[^[:space:]]*\).*#replace \2\3 => \4 \5#p'
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
