#!/bin/sh
# Runs a command where /dev/kvm exists, on a host where it does not.
#
# Some hosts have no KVM for us: a PVM guest's kernel does not bind KVM
# ("kvm-pvm: this kernel is itself a kvm-pvm guest; not binding"). There,
# this script boots Debian's kernel under QEMU TCG with an emulated AMD CPU
# that has SVM, loads kvm_amd in it, mounts this machine's root over 9p and
# runs the command in it, in the current directory. The KVM the command sees
# is a real kvm_amd (on SVM that QEMU emulates): slow, but the real API.
#
#   sh scripts/kvm-box.sh node dist/cli/main.js run hello
#   sh scripts/kvm-box.sh sh scripts/in-netns.sh node --import tsx --test test/x.test.ts
#
# Exits with the command's status. Test helpers scale their waits by
# LIGHTVM_TEST_TIME_SCALE (set here, default 30). KVM_BOX_MEM (MiB, default 6144) and
# KVM_BOX_CPUS (default 2) size the box. Needs root, apt-get (for the kernel
# package, fetched once into the cache), qemu-system-x86_64 and a static
# busybox (scripts/install-peers.sh installs both).
set -eu

[ $# -gt 0 ] || { echo "usage: kvm-box.sh COMMAND [ARG...]" >&2; exit 2; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lightvm/kvm-box"
mkdir -p "$cache"
for t in qemu-system-x86_64 busybox apt-get dpkg-deb gzip; do
    command -v "$t" >/dev/null 2>&1 || { echo "kvm-box: $t not found (sh scripts/install-peers.sh installs qemu and busybox)" >&2; exit 2; }
done

# The kernel: Debian's, unpacked once (kvm_amd, 9p and virtio are modules there).
if [ ! -f "$cache/kernel.ok" ]; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$pkg" ] || { echo "kvm-box: apt-cache names no kernel package for linux-image-amd64" >&2; exit 2; }
    rm -rf "$cache/k" "$cache"/*.deb
    (cd "$cache" && apt-get download -qq "$pkg" 2>/dev/null) || { echo "kvm-box: apt-get download $pkg failed" >&2; exit 2; }
    dpkg-deb -x "$cache"/"$pkg"_*.deb "$cache/k"
    rm -f "$cache"/*.deb
    touch "$cache/kernel.ok"
fi
vmlinuz=$(ls "$cache"/k/boot/vmlinuz-* | head -n 1)
mods=$(ls -d "$cache"/k/lib/modules/* | head -n 1)/kernel

# The initramfs: busybox and what mounting the root over 9p needs; the rest
# of the modules are loaded from the mounted root.
if [ ! -f "$cache/box.cpio.gz" ] || [ "$0" -nt "$cache/box.cpio.gz" ]; then
    ird="$cache/ird"
    rm -rf "$ird" && mkdir -p "$ird/bin" "$ird/mods" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/mnt"
    cp "$(command -v busybox)" "$ird/bin/busybox"
    for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
             drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet net/9p/9pnet_virtio \
             fs/netfs/netfs fs/fscache/fscache fs/9p/9p; do
        cp "$mods/$m.ko" "$ird/mods/"
    done
    cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p; do
    insmod /mods/$m.ko
done
run=$(sed -n 's/.*box\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
mods=$(sed -n 's/.*box\.mods=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /mnt || { echo "kvm-box: 9p mount failed"; poweroff -f; }
for m in virt/lib/irqbypass arch/x86/kvm/kvm drivers/crypto/ccp/ccp arch/x86/kvm/kvm-amd drivers/net/tun \
         net/llc/llc net/802/stp net/bridge/bridge drivers/net/veth fs/overlayfs/overlay; do
    insmod "/mnt$mods/$m.ko" 2>/dev/null || echo "kvm-box: module $m not loaded"
done
mount -t devtmpfs dev /mnt/dev; mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts; mount -t tmpfs shm /mnt/dev/shm
mount -t proc proc /mnt/proc; mount -t sysfs sys /mnt/sys
mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup 2>/dev/null
# sockets, pid files and temp files stay in the box
mount -t tmpfs tmp /mnt/tmp; mount -t tmpfs run /mnt/run
ip link set lo up 2>/dev/null
chroot /mnt /bin/sh "$run" </dev/console >/dev/console 2>&1
echo "kvm-box: exit $?"
sync
poweroff -f
INIT
    chmod +x "$ird/init"
    (cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$cache/box.cpio.gz.new"
    mv "$cache/box.cpio.gz.new" "$cache/box.cpio.gz"
fi

# The command, as a script the box runs from the shared root.
run=$(mktemp "$cache/run.XXXXXX")
out=$(mktemp "$cache/out.XXXXXX")
trap 'rm -f "$run" "$out"' EXIT
{
    echo "export PATH='$PATH' HOME='$HOME' TERM=dumb CI='${CI:-}' LIGHTVM_IN_KVM_BOX=1 LIGHTVM_TEST_TIME_SCALE=${LIGHTVM_TEST_TIME_SCALE:-30}"
    printf 'cd %s || exit 125\n' "'$(pwd)'"
    printf 'exec'
    for a in "$@"; do printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"; done
    echo
} > "$run"

qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "${KVM_BOX_CPUS:-2}" -m "${KVM_BOX_MEM:-6144}" \
    -nodefaults -no-user-config -display none -no-reboot -serial stdio \
    -kernel "$vmlinuz" -initrd "$cache/box.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 box.run=$run box.mods=$mods" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,id=hostroot,multidevs=remap </dev/null | tee "$out"
status=$(sed -n 's/^kvm-box: exit \([0-9]*\).*/\1/p' "$out" | tail -n 1)
[ -n "$status" ] || { echo "kvm-box: the box stopped before the command ended" >&2; exit 125; }
exit "$status"
