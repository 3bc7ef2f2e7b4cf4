#!/usr/bin/env bash
# Run every test of the repository: a gofmt check, go vet, and
# go test -race over all packages. The packages include a suite that runs
# the sidecar against a real OAuth2 server (ORY Hydra, built once into
# .cache/). A real Prometheus server scrapes the sidecar in another test,
# and further tests render and check the Kubernetes manifests in deploy/.
#
# Needs Go and a C compiler (Hydra's SQLite driver uses cgo). When the
# prometheus binary is missing and apt-get can run, it is installed.
# AUTHPROXY_SKIP_HYDRA=1 and AUTHPROXY_SKIP_PROMETHEUS=1 skip those suites
# with a message saying so; nothing is skipped silently.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted=$(git ls-files -z '*.go' | xargs -0 gofmt -l)
if [[ -n "$unformatted" ]]; then
	printf 'these files need gofmt -w:\n%s\n' "$unformatted" >&2
	exit 1
fi

step "go vet"
go vet ./...

if [[ "${AUTHPROXY_SKIP_HYDRA:-}" != "1" ]]; then
	step "ORY Hydra binary"
	bash scripts/hydra-build.sh
fi

if [[ "${AUTHPROXY_SKIP_PROMETHEUS:-}" != "1" ]] && ! command -v prometheus >/dev/null; then
	step "installing prometheus (Debian package)"
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	else
		echo "prometheus is missing and cannot be installed here: install the prometheus package, or set AUTHPROXY_SKIP_PROMETHEUS=1" >&2
	fi
fi

if ! command -v kubectl >/dev/null && [[ ! -x .cache/bin/kustomize ]]; then
	step "installing kustomize into .cache/bin (the manifest tests render deploy/ with it)"
	GOBIN="$repo_root/.cache/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
fi

step "go test -race ./..."
go test -race -count=1 -timeout 30m ./...
