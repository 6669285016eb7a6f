#!/usr/bin/env bash
# The point-in-time-recovery walkthrough on embedded defaults: a local cluster, the local file
# repository, run end to end, in pgpitr's home (PGPITR_HOME, else the default one), so that
# `pgpitr cluster describe my-pg` from a plain shell shows what it made.  Safe to run again: it
# removes what a previous run made, and refuses to touch a cluster of those names it did not make.
set -euo pipefail
PGPITR=${PGPITR:-pgpitr}
export TZ=${TZ:-UTC}

step() { printf '\n\033[1m$ pgpitr %s\033[0m\n' "$*"; "$PGPITR" "$@"; }
psql_my_pg() { "$PGPITR" cluster connect my-pg <<<"$1" >/dev/null; }

SECONDS=0
home=$("$PGPITR" agent status -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['home'])")
made="$home/walkthrough.clusters"  # the clusters an earlier run of this walkthrough made
echo "pgpitr walkthrough in PGPITR_HOME=$home"
existing=$("$PGPITR" cluster list -o json | python3 -c "import json,sys; print(' '.join(c['name'] for c in json.load(sys.stdin)))")
for name in new-cluster point-cluster my-pg; do
  if [ -f "$made" ] && grep -qx "$name" "$made"; then
    "$PGPITR" cluster delete "$name" 2>/dev/null || true
    "$PGPITR" cluster delete-backup "$name" --force 2>/dev/null || true
  elif [[ " $existing " == *" $name "* ]]; then
    echo "walkthrough: cluster $name in $home is not the walkthrough's; left alone. Run the" >&2
    echo "walkthrough in a home of its own, with a PGPITR_HOST and PGPITR_PORTS of its own" >&2
    echo "(docs/orchestration.md, \"Hosts and agents\")" >&2
    exit 1
  fi
done
printf '%s\n' my-pg new-cluster point-cluster >"$made"

step cluster create my-pg
step cluster list-backup-policy
step cluster edit-backup-policy my-pg-postgresql-backup-policy --set schedule.logfile.enable=true
step cluster backup my-pg
step cluster list-backup
step cluster create-account my-pg --username myuser
step cluster grant-role my-pg --username myuser --role READWRITE

printf '\n\033[1m$ psql: create table msg, insert row 1\033[0m\n'
psql_my_pg "CREATE TABLE msg (id int PRIMARY KEY, note text, at timestamptz DEFAULT now());
INSERT INTO msg (id, note) VALUES (1, 'before the noted time');"
sleep 2
noted=$(date -u '+%b %d,%Y %H:%M:%S UTC+0000')
echo "noted time: $noted"
sleep 2
printf '\n\033[1m$ psql: insert row 2\033[0m\n'
psql_my_pg "INSERT INTO msg (id, note) VALUES (2, 'after the noted time');"
step cluster create-restore-point my-pg --name after-row-2
printf '\n\033[1m$ psql: insert row 3, switch WAL (the restore point is archived with it)\033[0m\n'
psql_my_pg "INSERT INTO msg (id, note) VALUES (3, 'after the restore point');"
psql_my_pg "SELECT pg_switch_wal();"
sleep 2

step cluster describe my-pg
step cluster restore new-cluster --restore-to-time "$noted" --source-cluster my-pg
printf '\n\033[1m$ psql new-cluster: SELECT * FROM msg\033[0m\n'
"$PGPITR" cluster connect new-cluster <<<"SELECT id, note FROM msg ORDER BY id;"
printf '\n\033[1m$ psql my-pg: SELECT * FROM msg\033[0m\n'
"$PGPITR" cluster connect my-pg <<<"SELECT id, note FROM msg ORDER BY id;"
step cluster restore point-cluster --restore-to-name after-row-2 --source-cluster my-pg
printf '\n\033[1m$ psql point-cluster: SELECT * FROM msg\033[0m\n'
"$PGPITR" cluster connect point-cluster <<<"SELECT id, note FROM msg ORDER BY id;"
step cluster drill my-pg
# the second drill has the first one's measured rates: its RTO is predicted, then measured
step cluster drill my-pg
step cluster list-drill my-pg
step cluster list

restored=$("$PGPITR" cluster connect new-cluster <<<"SELECT string_agg(id::text, ',') FROM msg;" | sed -n 3p | tr -d ' ')
if [ "$restored" != "1" ]; then
  echo "walkthrough FAILED: new-cluster has rows '$restored', expected '1'" >&2
  exit 1
fi
at_point=$("$PGPITR" cluster connect point-cluster <<<"SELECT string_agg(id::text, ',' ORDER BY id) FROM msg;" | sed -n 3p | tr -d ' ')
if [ "$at_point" != "1,2" ]; then
  echo "walkthrough FAILED: point-cluster has rows '$at_point', expected '1,2'" >&2
  exit 1
fi
echo
echo "walkthrough OK in ${SECONDS} s: new-cluster has row 1 only, point-cluster rows 1 and 2 (up"
echo "to the restore point); my-pg has all three."
echo "clean up: $PGPITR cluster delete new-cluster; ... point-cluster; ... my-pg"
