#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 30s),
# built with TAGS (the Makefile's: libzstd, so the native zstd decoder is
# fuzzed beside the pure-Go one).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-30s}"
tags="${TAGS:-}"
status=0
for pkg in $(go list ./...); do
	for target in $(go test -tags "$tags" -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $pkg $target ($fuzztime)"
		if ! go test -tags "$tags" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
		fi
	done
done
exit $status
