#!/bin/sh
# Runs inside a kernel-matrix guest after switch_root (tests/kernels/guest.py):
# the root is the host's, read-only with a tmpfs overlay; /ndk-out is the
# writable share the results go out through. One pytest over `-m matrix`,
# then power off.
set -u
out=/ndk-out
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
# no tmpfs on /tmp: the root overlay is writable already, and a checkout under /tmp
# (a CI clone) would vanish beneath it
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
cut -d' ' -f1 /proc/uptime > $out/t-start
uname -r > $out/uname
# the guest's own NICs (virtio_net; its backend lets nothing out): up, so the
# driver builds its queues and page pools for the tests to find
for dev in $(ls /sys/class/net); do ip link set "$dev" up; done
checkout=$(dirname "$(dirname "$(dirname "$(readlink -f "$0")")")")
cd "$checkout"
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export NETDEVKIT_STATE_DIR=/run/netdevkit-state NETDEVKIT_IN_GUEST=1
export PYTHONDONTWRITEBYTECODE=1
# NDK_PYTEST_ARGS (from the initramfs): the test files holding matrix tests, -k
eval "set -- ${NDK_PYTEST_ARGS:-}"
.venv/bin/python -m pytest -m matrix -p no:cacheprovider -q -rs \
  --junitxml=$out/junit.xml "$@" > $out/pytest.log 2>&1
echo $? > $out/rc
cut -d' ' -f1 /proc/uptime > $out/t-end
dmesg > $out/dmesg.txt 2>/dev/null
sync
exec /bin/busybox poweroff -f
