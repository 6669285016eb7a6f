#!/usr/bin/env bash
# Run a command with a /tmp of its own in memory: a tmpfs, in a private mount namespace, so
# that nothing else on the machine sees it; it is gone when the command's last process ends.
# Only as root (mounting takes it), with the memory for it (8 GiB available), and unless
# PGPITR_TEST_DISK_TMP is set; otherwise the command runs as it is.
#
# Why: the suite makes, copies and removes files in /tmp all the time (initdb, base backups
# extracted, WAL, repositories, Prefect's SQLite); on the CI machine's ext4 disk, 30 % of the
# suite's CPU was the kernel's.  Measured 2026-12-07, three test modules on two workers: 179 CPU-s
# (61 in the kernel) on ext4, 154-165 CPU-s (38-41 in the kernel) on tmpfs; the whole suite on
# four workers took 767-799 s instead of 982-996 s.  Nothing in
# pgpitr depends on the kind of file system; the tests that need a full one mount their own.
set -euo pipefail
available_gib=$(awk '/^MemAvailable:/ {print int($2 / 1048576)}' /proc/meminfo)
if [ "$(id -u)" = 0 ] && [ -z "${PGPITR_TEST_DISK_TMP:-}" ] && [ "$available_gib" -ge 8 ] \
    && command -v unshare >/dev/null; then
  # a working directory under /tmp (a checkout there) is hidden by the new /tmp: it is copied
  # to the same path in it first
  exec unshare --mount --propagation private -- sh -c '
    set -e
    here=$(pwd -P)
    mount -t tmpfs -o mode=1777 pgpitr-test-tmp /tmp
    case $here in /tmp/?*) mkdir -p "$here"; tar -cf - . | tar -xf - -C "$here"; cd "$here" ;; esac
    exec "$@"' sh "$@"
fi
exec "$@"
