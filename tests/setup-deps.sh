#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages that building and testing portbroker need,
# if any are missing. Quiet when nothing is missing. Called by `make check-deps`.
set -euo pipefail

# gcc only recommends libc6-dev, so it is named; util-linux gives unshare and
# nsenter, iproute2 gives ip, systemd gives systemd-analyze and the PID-1 test.
packages=(
	gcc libc6-dev make pkg-config
	libsystemd-dev libsqlite3-dev libcmocka-dev
	sqlite3 python3 python3-pytest
	iproute2 util-linux systemd
)

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
apt-get update </dev/null || { sleep 5; apt-get update </dev/null; }
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
