#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make fuzz`: runs each libFuzzer target for a while, coverage-guided.
#   tests/fuzz/run.sh BUILD SECONDS TARGET...
# Each target starts from its corpus in tests/fuzz/corpus/TARGET (kept in
# git; the standalone driver replays it in `make check`) and writes what it
# finds to BUILD/fuzz/TARGET; a crash is saved as
# tests/fuzz/corpus/TARGET/crash-* (replayed by make check from then on,
# so it stays fixed) and fails the run. FUZZ_MERGE=1 merges what was found
# into the corpus, minimized. Prints one line per target: runs, coverage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

(($# >= 3)) || { echo "usage: $0 BUILD SECONDS TARGET..." >&2; exit 2; }
build=$1 seconds=$2
shift 2
rc=0
for t in "$@"; do
	corpus=tests/fuzz/corpus/$t work=$build/fuzz/$t log=$build/fuzz/$t.log
	mkdir -p "$corpus" "$work"
	if "$build/libfuzzer_$t" -max_total_time="$seconds" -max_len=4200 -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$corpus/" "$work" "$corpus" >"$log" 2>&1; then
		status=clean
	else
		status="FAILED (see $log; the input is in $corpus)"
		rc=1
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	printf 'fuzz %s: %s runs in %s s, %s: %s\n' "$t" "${runs:-?}" "$seconds" "${cov:-cov: ?}" "$status"
	if [[ ${FUZZ_MERGE:-} == 1 && $status == clean ]]; then
		"$build/libfuzzer_$t" -merge=1 -max_len=4200 "$corpus" "$work" >>"$log" 2>&1
	fi
done
exit "$rc"
