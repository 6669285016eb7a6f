#!/usr/bin/env bash
# The PITR walkthrough run as Prefect flows, watched in the Prefect UI.
#
# Starts a local Prefect server on 127.0.0.1:4200 in the background when none answers there (or
# at PREFECT_API_URL), runs scripts/walkthrough.sh (every command that changes something runs its
# flow against that server), says where to see the runs, and leaves the server running.
set -euo pipefail
PGPITR=${PGPITR:-pgpitr}
BIN=$(dirname "$(command -v "$PGPITR")")
PREFECT=${PREFECT:-$BIN/prefect}
HERE=$(cd "$(dirname "$0")" && pwd)
API=${PREFECT_API_URL:-http://127.0.0.1:4200/api}
UI=${API%/api}
LOG=${PREFECT_SERVER_LOG:-${TMPDIR:-/tmp}/pgpitr-prefect-server.log}

answers() {
  python3 -c "import sys, urllib.request as u; sys.exit(u.urlopen('$API/health', timeout=2).status != 200)" 2>/dev/null
}

started=""
if answers; then
  echo "Prefect API at $API answers: the flows run there"
else
  case "$API" in
    http://127.0.0.1:4200/api) ;;
    *) echo "PREFECT_API_URL=$API does not answer; unset it to start a local server" >&2; exit 1 ;;
  esac
  echo "starting a Prefect server on 127.0.0.1:4200 (log: $LOG) ..."
  PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false} \
    setsid nohup "$PREFECT" server start --host 127.0.0.1 --port 4200 >"$LOG" 2>&1 < /dev/null &
  started=$!
  for _ in $(seq 180); do answers && break; sleep 1; done
  answers || { echo "the Prefect server did not answer within 180 s; see $LOG" >&2; exit 1; }
  echo "Prefect server up (pid $started), UI at $UI"
fi
export PREFECT_API_URL=$API

PGPITR=$PGPITR bash "$HERE/walkthrough.sh"

echo
echo "Flow runs, task runs and artifacts of this walkthrough: $UI/runs"
echo "  (backup-my-pg, restore-new-cluster-from-my-pg, ...; artifacts: backups-my-pg, restore-progress-new-cluster)"
echo "Schedules from the backup policies: $PGPITR serve   (then $UI/deployments)"
if [ -n "$started" ]; then
  echo "The Prefect server keeps running; stop it with: kill $started"
fi
