#!/usr/bin/env bash
# The version matrix: the given tests on PostgreSQL 17 and 18 (the test wheels, tests/pgwheels.py),
# both at once (each spends most of its time waiting on PostgreSQL and Prefect, not on a core).
# As root, each runs as the service account and then as root, as `make test` does
# (scripts/run_tests.sh).
#
# `make test` (as root) runs everything at once: WITH_ROOT_TESTS=1 adds the whole suite's root
# tests on PostgreSQL 15, and SERVICE_SUITE="PYTEST ARGS" the whole suite as the service account,
# in the foreground with its progress shown as it goes.  The matrix and the root tests wait far
# more than they compute (about 300 s of CPU in 250 s on 2 cores), so beside the service suite,
# which keeps both cores busy, they cost its run about half their CPU time rather than their
# whole wall time.  The jobs in the background are printed whole, each after the foreground one,
# so that no two outputs interleave.
set -uo pipefail
py=$1; shift
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# each job's clusters take ports of their own (PGPITR_PORTS; the service suite's are the default
# 5433-7432): one run's stopped cluster keeps its port, which another run, not knowing that
# cluster, would otherwise give to a new one
declare -A ports=([17]=7433-8432 [18]=8433-9432 [root]=9433-10432)
jobs=()
for major in 17 18; do
  bindir=$("$py" -m tests.pgwheels "$major") || exit 1
  jobs+=("$major")
  ( PGPITR_PG_BINDIR=$bindir PGPITR_PORTS=${ports[$major]} bash scripts/run_tests.sh "$py" -q -p no:randomly "$@" >"$logs/$major" 2>&1
    echo $? >"$logs/$major.rc"; echo "== PostgreSQL $major ($bindir)" >"$logs/$major.title" ) &
done
if [ "${WITH_ROOT_TESTS:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
  jobs+=(root)
  ( PGPITR_PORTS=${ports[root]} PGPITR_TEST_PART=root bash scripts/run_tests.sh "$py" -q -n 2 --dist loadfile --no-loadscope-reorder --durations=10 >"$logs/root" 2>&1
    echo $? >"$logs/root.rc"; echo "== the tests that start as root (PostgreSQL 15)" >"$logs/root.title" ) &
fi
status=0
if [ -n "${SERVICE_SUITE:-}" ]; then
  # word splitting wanted: SERVICE_SUITE is a list of pytest's options
  # shellcheck disable=SC2086
  PGPITR_TEST_PART=service bash scripts/run_tests.sh "$py" $SERVICE_SUITE || { echo "the suite as the service account failed (exit $?)"; status=1; }
fi
wait
for job in "${jobs[@]}"; do
  cat "$logs/$job.title" "$logs/$job"
done
for job in "${jobs[@]}"; do
  rc=$(cat "$logs/$job.rc")
  [ "$rc" = 0 ] || { echo "$job: the tests failed (exit $rc)"; status=1; }
done
exit $status
