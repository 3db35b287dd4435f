#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages that building and testing portbroker need,
# if any are missing. Quiet when nothing is missing. Called by `make check-deps`.
set -euo pipefail

# gcc only recommends libc6-dev, so it is named; clang compiles the bind
# guard's BPF programs, libbpf-dev loads them; clang only recommends
# libclang-rt-dev, whose libFuzzer and sanitizer runtimes make fuzz links
# with, so it is named too; util-linux gives unshare,
# nsenter and setsid, iproute2 gives ip and ss, systemd gives systemd-analyze,
# the PID-1 test, systemd-socket-proxyd and systemd-socket-activate.
# nginx (with its stream module) and socat are the unmodified third-party
# servers that test_thirdparty.py and test_upgrade.py run under portctl;
# libcap2-bin gives setcap (a program with file capabilities).
# dnsmasq-base (dnsmasq without its system service), memcached and apache2
# are more of them (test_thirdparty.py); memcached's and apache2's services
# are kept from starting at install (policy-rc.d, below), and the tests run
# in network namespaces of their own, so a system instance could not take
# their ports anyway. gunicorn (Python's WSGI server; no service of its
# own) is the Unix-socket backend behind nginx in test_unix.py.
# valgrind runs brokerd under memcheck in make check. make bench compares
# against s6-fdholderd, counts syncs with strace and plots with gnuplot.
# make check-deb builds the Debian packages (build-essential, dpkg-dev,
# debhelper; dpkg-buildpackage checks for build-essential itself), checks
# them with lintian, copies the tree it builds from with git and finds the
# installed brokerd's worker with ps (procps). bash-completion loads
# portctl's completion as an installed system does (test_completion.py).
packages=(
	gcc libc6-dev make pkg-config clang libclang-rt-dev
	libsystemd-dev libsqlite3-dev libcmocka-dev libbpf-dev
	sqlite3 python3 python3-pytest
	iproute2 util-linux systemd
	nginx libnginx-mod-stream socat libcap2-bin
	dnsmasq-base memcached apache2 gunicorn
	valgrind s6 strace gnuplot-nox
	build-essential dpkg-dev debhelper lintian git procps
	bash-completion
)

# brokerd, run as root, runs its worker as user portbroker, and its unit runs
# it as that user: the tests need the user, as an installed system has it.
if ((EUID == 0)); then
	bash "$(dirname "${BASH_SOURCE[0]}")/add-user.sh"
fi

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $status == ii* ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if ((EUID != 0)); then
	echo "make check: missing packages; run as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "make check: installing missing packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The tests run nginx themselves; its package would start the
# system's nginx on port 80 at once. Where no policy-rc.d says otherwise, keep
# maintainer scripts from starting services during this install.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update </dev/null || { sleep 5; apt-get update </dev/null; }
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null

# Servers installed here only for the tests are not to start at the next
# boot either (nginx's, apache2's and memcached's units are enabled by their
# packages): disabled, when this run installed them.
for p in nginx apache2 memcached; do
	if [[ " ${missing[*]} " == *" $p "* ]] && command -v systemctl >/dev/null; then
		systemctl disable "$p" >/dev/null 2>&1 || true
	fi
done
