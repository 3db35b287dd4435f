#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the integration tests (tests/integration) against the build in BUILD:
#   tests/run-integration.sh BUILD [pytest arguments...]
# Called by `make check-integration`. PYTEST names the pytest command.
#
# The tests need root (network namespaces) and run portctl, the test helpers
# and examples/ as other uids. When those uids cannot reach BUILD (a clone
# under a 0700 directory such as /root), the tests run from a copy they can
# reach (BUILD and examples/ in a fresh 0755 directory under /var/tmp or
# /tmp, removed afterwards), or stop at once saying why.
# Exit status: pytest's, except that pytest's 5 (no test collected) and a
# run that could not start are failures (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

(($# >= 1)) || { echo "usage: $0 BUILD [pytest arguments...]" >&2; exit 2; }
build=$(realpath "$1")
shift
read -r -a pytest <<<"${PYTEST:-/usr/bin/python3 -m pytest}"
examples=$PWD/examples

if ((EUID != 0)); then
	echo "make check: integration tests SKIPPED: they need root (network namespaces," \
		"sockets handed to other uids); run make check as root" >&2
	exit 1
fi

# Can uid 65534 run portctl from there and read the examples?
reachable() {
	setpriv --reuid 65534 --regid 65534 --clear-groups \
		sh -c '"$1/portctl" --help >/dev/null 2>&1 && test -r "$2/listenfds-server.py"' sh "$1" "$2"
}

copy=
cleanup() { [[ -z $copy ]] || rm -rf -- "$copy"; }
trap cleanup EXIT
if ! reachable "$build" "$examples"; then
	for base in /var/tmp /tmp; do
		copy=$(mktemp -d "$base/portbroker-check.XXXXXX") || continue
		chmod 0755 "$copy"
		# All of BUILD (objects too: test_make_install runs `make install BUILD=`
		# on it, which must find everything up to date) and examples/.
		cp -a "$build" "$copy/build"
		cp -a "$examples" "$copy/examples"
		chmod -R u+rwX,go+rX,go-w "$copy"
		if reachable "$copy/build" "$copy/examples"; then
			break
		fi
		rm -rf -- "$copy"
		copy=
	done
	if [[ -z $copy ]]; then
		echo "make check: integration tests cannot run: uid 65534 cannot run $build/portctl," \
			"nor a copy of it under /var/tmp or /tmp" >&2
		exit 1
	fi
	echo "make check: other uids cannot reach $build; the integration tests run a copy in $copy" >&2
	build=$copy/build
	examples=$copy/examples
fi

rc=0
PB_BUILD=$build PB_EXAMPLES=$examples "${pytest[@]}" "$@" tests/integration || rc=$?
if ((rc == 5)); then
	echo "make check: pytest collected no integration tests (exit 5)" >&2
	exit 1
fi
exit "$rc"
