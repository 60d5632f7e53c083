#!/usr/bin/env bash
# Builds the engine tier's tools from the Go module proxy at pinned versions into OUT_DIR:
#   pulumi                       the Pulumi CLI (github.com/pulumi/pulumi/pkg/v3)
#   pulumi-language-python       the Python language host, with its -exec shim beside it
#   pulumi-resource-kubernetes   the Kubernetes provider (github.com/pulumi/pulumi-kubernetes)
#   kube-controller-manager      \ the same Kubernetes module and version as the
#   kube-scheduler               / deploy tier's kube-apiserver
#   kwok                         simulated nodes (sigs.k8s.io/kwok)
#
# Each is built in a throwaway module, because `go install M/cmd/x@V` is refused
# when M's go.mod replaces a module with a local path (`../sdk`): the throwaway
# module requires the published module instead and repeats every other replace.
# `make tools` points GOCACHE at a directory of its own and removes it afterwards.
set -euo pipefail
pulumi_version=${1:?Pulumi CLI version, e.g. v3.276.0}
provider_module_version=${2:?pulumi-kubernetes provider/v4 module version}
provider_version=${3:?pulumi-kubernetes release the provider is stamped with, e.g. 4.25.0}
language_host_version=${4:?sdk/v3 version that still holds the Python language host}
kube_version=${5:?Kubernetes version, e.g. v1.33.13}
kwok_version=${6:?KWOK version, e.g. v0.7.0}
out=${7:?output directory}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

# gomod MODULE@VERSION: the path of that module's go.mod in the module cache.
gomod() {
  (cd "$work" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
}
# moddir MODULE@VERSION: the module's extracted source in the module cache.
moddir() {
  (cd "$work" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
}
# replaces GOMOD: its replace directives that point at published modules, as go.mod lines.
replaces() {
  sed -e 's#//.*##' "$1" |
    sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:](]\{1,\}\)\([[:space:]]\{1,\}v[^[:space:]]*\)\{0,1\}[[:space:]]\{1,\}=>[[:space:]]\{1,\}\([^.[:space:]][^[:space:]]*\)[[:space:]]\{1,\}\(v[^[:space:]]*\).*#replace \2\3 => \4 \5#p'
}
# go_mod NAME MODULE@VERSION...: $work/NAME/go.mod, a throwaway module that requires each
# module and repeats the first one's replace directives to published modules.
go_mod() {
  local name=$1 first=$2
  shift
  mkdir -p "$work/$name"
  {
    echo "module tide.local/$name"
    echo "go 1.24"
    for module in "$@"; do echo "require ${module%@*} ${module#*@}"; done
    replaces "$(gomod "$first")"
  } >"$work/$name/go.mod"
}
# go_build NAME BINARY PACKAGE LDFLAGS: PACKAGE built in $work/NAME into $out/BINARY; the
# binary appears only once whole, so a build cut short is redone next time.
go_build() {
  (cd "$work/$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $4" -o "$out/$2.part" "$3")
  mv "$out/$2.part" "$out/$2"
}

if [ ! -x "$out/pulumi" ]; then
  echo "building the Pulumi CLI $pulumi_version from the Go module proxy (about 8 minutes on 2 cores)"
  go_mod pulumi "github.com/pulumi/pulumi/pkg/v3@$pulumi_version" \
    "github.com/pulumi/pulumi/sdk/v3@$pulumi_version"
  go_build pulumi pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$pulumi_version"
fi

if [ ! -x "$out/pulumi-language-python" ]; then
  # The current language host module (sdk/python/cmd/pulumi-language-python/v3) is not
  # served by the proxy; sdk/v3 up to 2023 carried it inside, and its gRPC protocol is
  # still the one the CLI speaks. Its -exec shim is taken from the CLI's own version.
  echo "building the Python language host from github.com/pulumi/pulumi/sdk/v3@$language_host_version"
  install -m 0755 "$(moddir "github.com/pulumi/pulumi/sdk/v3@$pulumi_version")/python/cmd/pulumi-language-python-exec" \
    "$out/pulumi-language-python-exec"
  go_mod language-host "github.com/pulumi/pulumi/sdk/v3@$language_host_version"
  go_build language-host pulumi-language-python \
    github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$language_host_version"
fi

if [ ! -x "$out/pulumi-resource-kubernetes" ]; then
  echo "building the Kubernetes provider $provider_version from the Go module proxy (about 25 minutes on 2 cores)"
  module=github.com/pulumi/pulumi-kubernetes/provider/v4
  src=$(moddir "$module@$provider_module_version")
  go_mod provider "$module@$provider_module_version"
  # Instead of the provider's `sdk/v4 => ../sdk`: the SDK of the release it is.
  echo "replace github.com/pulumi/pulumi-kubernetes/sdk/v4 => github.com/pulumi/pulumi-kubernetes/sdk/v4 v$provider_version" \
    >>"$work/provider/go.mod"
  # The main package embeds schema-embed.json and terraform-mapping-embed.json, which its
  # go:generate step makes and the module zip does not hold; run that step here.
  for f in main.go generate.go schema.json terraform-mapping.json; do
    install -m 0644 "$src/cmd/pulumi-resource-kubernetes/$f" "$work/provider/$f"
  done
  (cd "$work/provider" && VERSION=$provider_version go run generate.go >/dev/null)
  go_build provider pulumi-resource-kubernetes . \
    "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$provider_version"
fi

if [ ! -x "$out/kube-controller-manager" ] || [ ! -x "$out/kube-scheduler" ]; then
  echo "building kube-controller-manager and kube-scheduler $kube_version (about 3 minutes on 2 cores)"
  staging_version="v0.${kube_version#v1.}"
  mkdir -p "$work/kube"
  {
    echo "module tide.local/kube"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $kube_version"
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' \
      "$(gomod "k8s.io/kubernetes@$kube_version")"
  } >"$work/kube/go.mod"
  ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$kube_version" | cut -d. -f2)"
  for cmd in kube-controller-manager kube-scheduler; do
    go_build kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$ldflags"
  done
fi

if [ ! -x "$out/kwok" ]; then
  echo "building kwok $kwok_version from the Go module proxy"
  go_mod kwok "sigs.k8s.io/kwok@$kwok_version"
  go_build kwok kwok sigs.k8s.io/kwok/cmd/kwok ""
fi
