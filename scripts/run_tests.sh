#!/usr/bin/env bash
# `make test`: the suite as pgpitr runs, never as root.
#
# Run by root (CI, the quick start), the suite runs as pgpitr's service account, from a copy of
# the checkout that account can read (a clone may sit under a directory only root enters); then
# the tests that must start as root (marked `root`: they make accounts, mount file systems, run
# `pgpitr install`, and prove that nothing pgpitr runs keeps root's rights) run as root.  Run by
# anyone else, the whole suite runs as that user and the root tests say they need root.
set -euo pipefail
py=$1; shift
if [ "$(id -u)" != 0 ]; then
  exec "$py" -m pytest "$@"
fi
account=$("$py" -I -c 'from pgpitr.privilege import service_account as s; a = s(); print(a.name if a else "")')
if [ -z "$account" ]; then
  echo "no service account: run \`make install\` first" >&2
  exit 1
fi
copy=$(mktemp -d /tmp/pgpitr-suite.XXXXXX)
trap 'rm -rf "$copy"' EXIT
tar --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' -cf - . | tar -xf - -C "$copy"
chmod -R a+rX "$copy"
chmod 755 "$copy"
account_home=$(getent passwd "$account" | cut -d: -f6)
[ -d "$account_home" ] || account_home=/tmp
# pytest's 5 (no test selected) is not a failure here: a list of tests may hold one kind only
ran() { [ "$1" = 0 ] || [ "$1" = 5 ]; }
# PGPITR_TEST_PART: "service" or "root" runs that part alone (`make test` runs the root part
# beside the version matrix); each part alone must run some test
part=${PGPITR_TEST_PART:-both}
unprivileged=5 privileged=5
if [ "$part" != root ]; then
  echo "== the suite as the service account $account"
  ( cd "$copy" && setpriv --reuid="$account" --regid="$account" --init-groups \
      env HOME="$account_home" USER="$account" LOGNAME="$account" PYTHONDONTWRITEBYTECODE=1 \
      "$py" -m pytest -p no:cacheprovider -m "not root" "$@" ) && unprivileged=0 || unprivileged=$?
fi
if [ "$part" != service ]; then
  echo "== the tests that start as root"
  "$py" -m pytest -p no:cacheprovider -m root "$@" && privileged=0 || privileged=$?
fi
case $part in
  service) [ "$unprivileged" = 0 ] ;;
  root) [ "$privileged" = 0 ] ;;
  *) ran "$unprivileged" && ran "$privileged" && ! { [ "$unprivileged" = 5 ] && [ "$privileged" = 5 ]; } ;;
esac
