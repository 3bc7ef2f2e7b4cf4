#!/usr/bin/env bash
# Run the benchmark harness (cmd/bench), which compares the sidecar with
# nginx and with a direct connection to the upstream, all on 127.0.0.1.
# nginx and wrk are installed from the Debian packages when missing, which
# needs root and access to the package mirror.
#
# Usage: scripts/bench.sh [harness flags]
#   scripts/bench.sh -quick            # a short run that checks the harness works
#   scripts/bench.sh -out report.md    # the full run, about 8 minutes
# Run "go run ./cmd/bench -help" for every flag.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() {
	printf 'bench.sh: %s\n' "$*" >&2
}

have_nginx() {
	command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]
}

if ! have_nginx || ! command -v wrk >/dev/null 2>&1; then
	if [[ $(id -u) -ne 0 ]]; then
		log "nginx or wrk is missing and installing them needs root; run: sudo apt-get install -y --no-install-recommends nginx wrk"
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		log "nginx or wrk is missing and apt-get is not available; install nginx and wrk with the system's package manager"
		exit 1
	fi
	log "installing nginx and wrk"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null
fi

cd "$repo_root"
exec go run ./cmd/bench "$@"
