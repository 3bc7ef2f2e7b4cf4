#!/usr/bin/env bash
# Build the ORY Hydra binary that the integration tests run as their OAuth2
# server, and print its absolute path on stdout.
#
# The Hydra version comes from tools/hydra/go.mod, a module of its own so that
# Hydra's dependencies stay out of the root go.mod. The binary goes to
# HYDRA_BIN, or by default to .cache/hydra/hydra-<version> under the
# repository root; internal/hydratest looks in the same places, and both take a
# relative HYDRA_BIN relative to the repository root. When that file already
# exists the build is skipped, so the script is cheap to call on every CI run.
#
# Requirements: Go and a C compiler, because DSN=memory needs Hydra's cgo
# SQLite driver. One cold build of v2.3.0 on a 2-core machine took about
# 3.5 minutes: 30 s of module downloads and 190 s of compiling.
#
# Usage: scripts/hydra-build.sh
#   HYDRA_BIN=/path/to/hydra scripts/hydra-build.sh
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool_dir="$repo_root/tools/hydra"

log() {
	printf 'hydra-build: %s\n' "$*" >&2
}

version=$(cd "$tool_dir" && go list -m -f '{{.Version}}' github.com/ory/hydra/v2)
if [[ -z "$version" ]]; then
	log "cannot read the github.com/ory/hydra/v2 version from $tool_dir/go.mod"
	exit 1
fi

bin=${HYDRA_BIN:-"$repo_root/.cache/hydra/hydra-$version"}
if [[ "$bin" != /* ]]; then
	bin="$repo_root/$bin"
fi

if [[ -x "$bin" ]]; then
	log "$bin already exists, skipping the build"
	printf '%s\n' "$bin"
	exit 0
fi

cc=$(go env CC)
if ! command -v "${cc%% *}" >/dev/null 2>&1; then
	log "C compiler '$cc' not found: Hydra's SQLite driver needs cgo (install gcc)"
	exit 1
fi

mkdir -p "$(dirname "$bin")"
# Build into a temporary folder next to the target and rename it at the end, so
# an interrupted build never leaves a partial binary that a later run would
# take as finished.
tmp_dir=$(mktemp -d "$bin.tmp.XXXXXX")
trap 'rm -rf "$tmp_dir"' EXIT

log "building github.com/ory/hydra/v2@$version into $bin (a cold build takes minutes)"
start=$SECONDS
(
	cd "$tool_dir"
	CGO_ENABLED=1 go build \
		-buildvcs=false \
		-trimpath \
		-tags sqlite,sqlite_omit_load_extension \
		-ldflags "-X github.com/ory/hydra/v2/driver/config.Version=$version" \
		-o "$tmp_dir/hydra" \
		github.com/ory/hydra/v2
)
mv -f "$tmp_dir/hydra" "$bin"
log "built in $((SECONDS - start))s"

printf '%s\n' "$bin"
