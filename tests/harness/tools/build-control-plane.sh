#!/usr/bin/env bash
# Builds kube-apiserver, the kubelet, kube-proxy, etcd, CoreDNS and kube-network-policies from
# the Go module proxy at pinned versions into OUT_DIR.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused because
# k8s.io/kubernetes replaces its staging modules with local paths. A throwaway
# module requires k8s.io/kubernetes and points each staging module at its
# published v0.x release (same minor and patch), read from kubernetes' own go.mod.
set -euo pipefail
kube_version=${1:?kube version, e.g. v1.33.13}
etcd_version=${2:?etcd version, e.g. v3.5.21}
coredns_version=${3:?CoreDNS version, e.g. v1.12.2}
network_policies_version=${4:?kube-network-policies version, e.g. v0.8.0}
out=${5:?output directory}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

staging_version="v0.${kube_version#v1.}"
ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$kube_version" | cut -d. -f2)"
# kube-apiserver, and the kubelet and kube-proxy of the harness's real node, from one
# throwaway module.
for component in kube-apiserver kubelet kube-proxy; do
  [ -x "$out/$component" ] && continue
  echo "building $component $kube_version from the Go module proxy (5-10 minutes on 2 cores)"
  if [ ! -f "$work/kubernetes/go.mod" ]; then
    gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$kube_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    mkdir -p "$work/kubernetes"
    {
      echo "module tide.local/controlplane"
      echo "go 1.24"
      echo "require k8s.io/kubernetes $kube_version"
      sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
    } >"$work/kubernetes/go.mod"
  fi
  (cd "$work/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
     -o "$out/$component.part" "k8s.io/kubernetes/cmd/$component")
  mv "$out/$component.part" "$out/$component"
done

if [ ! -x "$out/etcd" ]; then
  echo "building etcd $etcd_version from the Go module proxy"
  mkdir -p "$work/etcd"
  printf 'module tide.local/etcd\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" >"$work/etcd/go.mod"
  (cd "$work/etcd" && go get "go.etcd.io/etcd/server/v3@$etcd_version" >/dev/null 2>&1 && \
   CGO_ENABLED=0 go build -trimpath -o "$out/etcd.part" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.part" "$out/etcd"
fi

# CoreDNS for the real node's cluster DNS, built the way its README describes for a
# custom plugin set: a main package that sets dnsserver.Directives and calls
# coremain.Run, importing only the plugins tests/harness/cluster_dns.py's Corefile uses
# (the full build pulls in every cloud SDK). Directives is the chain's order, as in
# upstream's plugin.cfg: cache must come before kubernetes to answer for it.
if [ ! -x "$out/coredns" ]; then
  echo "building CoreDNS $coredns_version from the Go module proxy"
  mkdir -p "$work/coredns"
  printf 'module tide.local/coredns\ngo 1.24\nrequire github.com/coredns/coredns %s\n' "$coredns_version" >"$work/coredns/go.mod"
  plugins="ready health errors cache kubernetes"
  {
    echo 'package main'
    echo 'import ('
    echo '  "github.com/coredns/coredns/core/dnsserver"'
    echo '  "github.com/coredns/coredns/coremain"'
    for plugin in $plugins; do echo "  _ \"github.com/coredns/coredns/plugin/$plugin\""; done
    echo ')'
    printf 'func init() { dnsserver.Directives = []string{'
    for plugin in $plugins; do printf '"%s",' "$plugin"; done
    echo '} }'
    echo 'func main() { coremain.Run() }'
  } >"$work/coredns/main.go"
  (cd "$work/coredns" && go get "github.com/coredns/coredns@$coredns_version" >/dev/null 2>&1 && \
   CGO_ENABLED=0 go build -trimpath -o "$out/coredns.part" .)
  mv "$out/coredns.part" "$out/coredns"
fi

# kube-network-policies, the NetworkPolicy engine kind ships, for the real node. Its main
# package is ./cmd (upstream's Dockerfile builds it the same way, CGO off).
if [ ! -x "$out/kube-network-policies" ]; then
  echo "building kube-network-policies $network_policies_version from the Go module proxy"
  mkdir -p "$work/netpol"
  printf 'module tide.local/netpol\ngo 1.24\nrequire sigs.k8s.io/kube-network-policies %s\n' "$network_policies_version" >"$work/netpol/go.mod"
  (cd "$work/netpol" && go get "sigs.k8s.io/kube-network-policies@$network_policies_version" >/dev/null 2>&1 && \
   CGO_ENABLED=0 go build -trimpath -o "$out/kube-network-policies.part" sigs.k8s.io/kube-network-policies/cmd)
  mv "$out/kube-network-policies.part" "$out/kube-network-policies"
fi
