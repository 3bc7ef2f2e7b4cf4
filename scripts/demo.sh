#!/usr/bin/env bash
# Run the sidecar end to end on this machine: a local Taskmaster-compatible
# server on 127.0.0.1:8081 as the token endpoint and API, the sidecar on
# 127.0.0.1:8080 (admin port 127.0.0.1:9090), then one request through the
# sidecar without credentials.
#
# Usage: scripts/demo.sh          keep both running until Ctrl-C
#        scripts/demo.sh --once   stop after the first request (used by CI)
set -euo pipefail

once=false
[[ "${1:-}" == "--once" ]] && once=true

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo_root/.cache/bin"
logs="$repo_root/.cache/demo"
mkdir -p "$bin" "$logs"

say() { printf '\n== %s\n' "$*"; }

for port in 8080 8081 9090; do
	if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "demo: 127.0.0.1:$port is already in use (another demo still running?); stop that process first" >&2
		exit 1
	fi
done

say "building authproxy and the local Taskmaster"
(cd "$repo_root" && go build -o "$bin/authproxy" . && go build -o "$bin/taskmaster" ./cmd/taskmaster)

# The demo credentials exist only in this local server.
secret_file="$logs/client-secret"
printf 'demo-secret\n' >"$secret_file"

pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

"$bin/taskmaster" -addr 127.0.0.1:8081 -client-id demo-client \
	-client-secret-file "$secret_file" >"$logs/taskmaster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	(echo >/dev/tcp/127.0.0.1/8081) 2>/dev/null && break
	sleep 0.1
done

CLIENT_ID=demo-client CLIENT_SECRET_FILE="$secret_file" \
	UPSTREAM_URL=http://127.0.0.1:8081 LISTEN_ADDR=127.0.0.1:8080 \
	ADMIN_ADDR=127.0.0.1:9090 LOG_FORMAT=console \
	"$bin/authproxy" 2>"$logs/authproxy.log" &
pids+=($!)

say "waiting for the sidecar to hold a token (GET http://127.0.0.1:9090/readyz)"
for _ in $(seq 1 100); do
	if curl -sf http://127.0.0.1:9090/readyz >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done
if ! kill -0 "${pids[1]}" 2>/dev/null; then
	echo "demo: the sidecar exited; its log follows" >&2
	cat "$logs/authproxy.log" >&2
	exit 1
fi
curl -sS http://127.0.0.1:9090/readyz

say "curl http://localhost:8080/api/tasks   (no credentials)"
curl -sS -i http://localhost:8080/api/tasks
echo

say "token requests so far (from http://127.0.0.1:9090/metrics)"
curl -sS http://127.0.0.1:9090/metrics | grep '^authproxy_token_fetches_total' | grep -v ' 0$' || true

say "sidecar log ($logs/authproxy.log)"
cat "$logs/authproxy.log"

if $once; then
	exit 0
fi
say "running; try: curl http://localhost:8080/api/tasks   (Ctrl-C stops both)"
wait
