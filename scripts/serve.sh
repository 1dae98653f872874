#!/usr/bin/env bash
# Real mode's web tier: granian serving janction.serve:application (HTTP, API, websockets) with
# WEB_WORKERS worker processes, each with its own database pool. granian's main process respawns a
# worker that dies. See the README's real-mode section for every variable.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?real mode needs DATABASE_URL (and REDIS_URL, DJANGO_SECRET_KEY); see the README}"
# Every web worker draws its connections from a bounded pool (janction/settings/database.py).
export DATABASE_POOL="${DATABASE_POOL:-1}"
export DATABASE_APPLICATION_NAME="${DATABASE_APPLICATION_NAME:-janction-web}"

# prometheus-client's multiprocess mode (docs/metrics.md): every granian worker writes its counters into this
# folder and /metrics adds them up. Emptied at each start: the counters of the last run's processes go with it.
METRICS_DIR="${JANCTION_METRICS_DIR:-${JANCTION_VAR_DIR:-var}/metrics}"
export JANCTION_METRICS_DIR="$METRICS_DIR"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$METRICS_DIR/web}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete

VENV="${VENV:-.venv}"
exec "$VENV/bin/granian" janction.serve:application \
    --interface asginl \
    --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
    --workers "${WEB_WORKERS:-$(nproc)}" \
    --respawn-failed-workers --respawn-interval 1 \
    --workers-kill-timeout "${WEB_KILL_TIMEOUT_SECONDS:-30}" \
    --http 1 \
    --http1-header-read-timeout "${WEB_HEADER_READ_TIMEOUT_MS:-10000}" \
    --backlog "${WEB_BACKLOG:-1024}" \
    --log-level "${WEB_LOG_LEVEL:-info}" \
    "$@"
