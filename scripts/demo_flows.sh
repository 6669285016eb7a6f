#!/usr/bin/env bash
# The PITR walkthrough run as Prefect flows, watched in the Prefect UI.
#
# With PREFECT_API_URL set, the flows run there; otherwise on pgpitr's own local Prefect server
# (`pgpitr server start`: 127.0.0.1:4200, kept running, found by the `prefect` CLI through the
# profile it writes).  Starts this host's agent (`pgpitr agent start`) so that the schedules run,
# runs scripts/walkthrough.sh (every command that changes something runs its flow), says where
# to see the runs, and leaves the server and the agent running.
set -euo pipefail
PGPITR=${PGPITR:-pgpitr}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -n "${PREFECT_API_URL:-}" ]; then
  echo "Prefect API: $PREFECT_API_URL"
else
  "$PGPITR" server start
fi
"$PGPITR" agent start

PGPITR=$PGPITR bash "$HERE/walkthrough.sh"

UI=$("$PGPITR" server status -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['url'][:-4])")
[ -n "${PREFECT_API_URL:-}" ] && UI=${PREFECT_API_URL%/api}
HOST=$("$PGPITR" agent status -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['host'])")
echo
echo "Flow runs, task runs and artifacts of this walkthrough: $UI/runs"
echo "  (backup-$HOST/my-pg, restore-$HOST/new-cluster-from-my-pg, ...;"
echo "   artifacts: backups-$HOST-my-pg, restore-progress-$HOST-new-cluster, the drill report"
echo "   drill-$HOST-my-pg: $UI/artifacts)"
echo "Schedules, served by this host's agent: $UI/deployments (pgpitr-$HOST)"
echo "The agent and the Prefect server keep running: $PGPITR agent stop; $PGPITR server stop"
