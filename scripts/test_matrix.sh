#!/usr/bin/env bash
# The version matrix: the given tests on PostgreSQL 17 and 18 (the test wheels, tests/pgwheels.py),
# both at once (each spends most of its time waiting on PostgreSQL and Prefect, not on a core);
# each version's output is printed whole when it ends, so the two never interleave.  As root, each
# runs as the service account (scripts/run_tests.sh); the root tests that need a version of their
# own are parametrized over the versions in the root job below, since a pytest session as root per
# version cost more than its one test (ci48: about 100 s each on the loaded machine).
set -uo pipefail
py=$1; shift
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# each version's clusters take ports of their own (PGPITR_PORTS): one run's stopped cluster keeps
# its port, which the other run, not knowing that cluster, would otherwise give to a new one
declare -A ports=([17]=7433-8432 [18]=8433-9432)
# the repository kinds split between the versions (tests/conftest.py's REPOSITORY_KINDS)
declare -A kinds=([17]=s3 [18]=file)
for major in 17 18; do
  bindir=$("$py" -m tests.pgwheels "$major") || exit 1
  ( PGPITR_TEST_PART=service PGPITR_PG_BINDIR=$bindir PGPITR_PORTS=${ports[$major]} PGPITR_TEST_REPOSITORY_KINDS=${kinds[$major]} bash scripts/run_tests.sh "$py" -q -p no:randomly "$@" >"$logs/$major" 2>&1
    echo $? >"$logs/$major.rc"; echo "== PostgreSQL $major ($bindir)"; cat "$logs/$major" ) &
done
# WITH_ROOT_TESTS=1 (`make test` as root): the whole suite's root tests, on PostgreSQL 15, beside
# the matrix: they wait on PostgreSQL, Patroni, agents and accounts far more than they compute, so
# on four workers: the three long modules (conftest's LONG_MODULES) one each, the rest on the
# fourth (ci49, on three: the root job took 381 s, 230 s of it after the matrix had ended)
jobs=(17 18)
if [ "${WITH_ROOT_TESTS:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
  jobs+=(root)
  ( PGPITR_TEST_PART=root bash scripts/run_tests.sh "$py" -q -n 4 --dist loadfile --no-loadscope-reorder --durations=10 >"$logs/root" 2>&1
    echo $? >"$logs/root.rc"; echo "== the tests that start as root (PostgreSQL 15)"; cat "$logs/root" ) &
fi
wait
status=0
for job in "${jobs[@]}"; do
  rc=$(cat "$logs/$job.rc")
  [ "$rc" = 0 ] || { echo "$job: the tests failed (exit $rc)"; status=1; }
done
exit $status
