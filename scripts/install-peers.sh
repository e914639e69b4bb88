#!/bin/sh
# Install the peers LightVM is measured against and the real clients its
# front ends are tested with: QEMU (x86_64 system emulator), the OCI runtimes
# crun and runc, podman (with conmon), containerd (and ctr), Docker's engine,
# a static BusyBox (container rootfs), fio (disk floor), Xen's xenstore-utils
# (clients for the XenStore-compatible store), and the network clients the
# tests talk to guests with (ip, ping, nc, curl); and what building a Tinyx
# kernel from Debian's linux-source needs besides gcc and make (flex, bison,
# bc, libelf-dev for objtool).
# Idempotent: a package already installed is left alone. Debian/Ubuntu only.
# Changes nothing on the host but the packages it installs.
set -eu

# --optional (used by `npm test`): when the peers cannot be installed here,
# say so and succeed; the tests that need them are then skipped.
optional=false
[ "${1:-}" = "--optional" ] && optional=true
give_up() {
    echo "install-peers: $1" >&2
    if $optional; then echo "install-peers: continuing without them (tests that need them are skipped)" >&2; exit 0; fi
    exit 1
}

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    give_up "not a Debian-like system (no apt-get/dpkg-query); install the packages named in this script yourself"
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        give_up "must run as root (or with sudo available)"
    fi
fi

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# qemu-system-x86 is the smallest Debian package providing qemu-system-x86_64
# (it pulls qemu-system-common and qemu-system-data, no GUI).
# --no-install-recommends keeps out the recommended GUI/firmware extras.
PACKAGES="qemu-system-x86 crun runc podman conmon containerd docker.io busybox-static fio xenstore-utils iproute2 iputils-ping netcat-openbsd curl flex bison bc libelf-dev"
missing=
for p in $PACKAGES; do
    if installed "$p"; then
        echo "install-peers: $p already installed, skipped"
    else
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-peers: nothing to do"
    exit 0
fi

echo "install-peers: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# apt and dpkg are chatty: keep their output, show it only on failure.
if ! { $SUDO apt-get update -qq &&
       # shellcheck disable=SC2086
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends $missing; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    give_up "apt-get failed"
fi
for p in $missing; do
    if installed "$p"; then echo "install-peers: installed $p"; else
        echo "install-peers: failed to install $p" >&2; exit 1; fi
done
for t in qemu-system-x86_64 crun runc podman containerd ctr dockerd busybox fio xenstore-read; do
    printf 'install-peers: %s -> %s\n' "$t" "$(command -v "$t" || echo missing)"
done
