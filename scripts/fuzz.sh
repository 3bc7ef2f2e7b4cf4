#!/usr/bin/env bash
# Run every fuzz target of the repository for a short, bounded time:
# token-response parsing (tokencache), configuration parsing (the main
# package) and request rewriting (proxy). A failing input is saved under
# the package's testdata/fuzz folder; commit it so that it becomes a
# regular test case of go test.
#
# FUZZTIME sets the time per target (default 10s), in go test -fuzztime
# syntax. The targets run one after another with -parallel 2, so the run
# takes about 7 times FUZZTIME plus build time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}

targets=(
	"./tokencache FuzzTokenResponse"
	"./tokencache FuzzSanitize"
	"./tokencache FuzzParseRetryAfter"
	"./tokencache FuzzExpiresIn"
	". FuzzLoadConfig"
	"./proxy FuzzRewrite"
)
for entry in "${targets[@]}"; do
	read -r pkg name <<<"$entry"
	printf '== %s %s (%s)\n' "$pkg" "$name" "$fuzztime"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel 2 "$pkg"
done
