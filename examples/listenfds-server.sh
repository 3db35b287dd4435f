#!/bin/sh
# SPDX-License-Identifier: MIT
# listenfds-server.sh: a socket-activated server in shell. It takes the
# listening socket on fd 3 (LISTEN_FDS, LISTEN_PID as systemd and
# `portctl get` pass it) and answers every connection with the line
# "ok listenfds-server.sh PID" (PID of the process serving that connection).
#
#     portctl get 8080 -- ./listenfds-server.sh
#
# A shell cannot accept() by itself, so a helper accepts on fd 3 and runs a
# small shell command per connection, with the connection on stdin/stdout:
#  - socat >= 1.8 with its ACCEPT-FD address;
#  - otherwise (Debian 12 has socat 1.7.4, which cannot accept on an
#    inherited fd) systemd-socket-activate --accept --inetd, which takes
#    sockets from LISTEN_FDS as well.
set -eu

me=listenfds-server.sh
no_socket() {
	echo "$me: no socket passed (LISTEN_FDS/LISTEN_PID unset or not ours);" \
		"run me as \`portctl get 8080 -- $me\`" >&2
	exit 1
}
[ "${LISTEN_PID:-}" = "$$" ] || no_socket
case ${LISTEN_FDS:-} in
'' | *[!0-9]*) no_socket ;;
esac
[ "$LISTEN_FDS" -ge 1 ] || no_socket

# Run by sh -c once per connection, with the connection on stdin and stdout.
reply='echo ok listenfds-server.sh $$'

if command -v socat >/dev/null 2>&1 && socat -h 2>/dev/null | grep -qi '^[[:space:]]*accept-fd:'; then
	unset LISTEN_PID LISTEN_FDS LISTEN_FDNAMES
	echo "$me: serving fd 3 with socat ACCEPT-FD as pid $$" >&2
	exec socat ACCEPT-FD:3,fork SYSTEM:"$reply"
fi

if command -v systemd-socket-activate >/dev/null 2>&1; then
	# exec keeps our pid, so LISTEN_PID stays right; it passes only fd 3 on
	# (LISTEN_FDS=1), whatever else we got.
	export LISTEN_FDS=1
	unset LISTEN_FDNAMES
	echo "$me: serving fd 3 with systemd-socket-activate as pid $$" >&2
	SYSTEMD_LOG_LEVEL=warning exec systemd-socket-activate --accept --inetd sh -c "$reply"
fi

echo "$me: needs socat >= 1.8 (ACCEPT-FD) or systemd-socket-activate; install one" >&2
exit 1
