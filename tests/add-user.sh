#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Creates the system user brokerd's worker (and, under its unit, brokerd)
# runs as, if it is missing: what systemd-sysusers does with
# systemd/portbroker.sysusers, for machines where it cannot run.
set -euo pipefail
getent passwd portbroker >/dev/null && exit 0
useradd --system --user-group --no-create-home --home-dir /var/lib/portbroker \
	--shell /usr/sbin/nologin --comment "portbroker daemon" portbroker
