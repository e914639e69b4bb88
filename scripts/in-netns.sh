#!/bin/sh
# Runs a command in a network namespace of its own when it can (as root):
# the bridges and taps that tests create never touch the host's network.
# Elsewhere it runs the command as it is. LIGHTVM_HOST_NETNS names the
# namespace we came from (our parent's, alive while it waits for us), for
# the one test that must reach the npm registry: it runs only npm there.
if [ "$(id -u)" = 0 ] && [ -z "${LIGHTVM_NETNS:-}" ] && command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
    exec unshare -n -- env LIGHTVM_NETNS=1 LIGHTVM_HOST_NETNS="/proc/$PPID/ns/net" sh -c 'ip link set lo up 2>/dev/null || true; exec "$@"' sh "$@"
fi
exec "$@"
