#!/usr/bin/env bash
# What `make run` runs once the virtualenv is installed: the embedded default on http://$HOST:$PORT.
# Migrates the SQLite database, collects the static files WhiteNoise serves (as a deployment does), creates the
# demo accounts (printing their passwords once) and starts `manage.py run_embedded`, which prints what to open.
# DEBUG stays off unless DJANGO_DEBUG=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
PY=${PY:-.venv/bin/python}
unset DATABASE_URL REDIS_URL DJANGO_SETTINGS_MODULE

# The address to open: a wildcard bind is opened on the loopback address; IPv6 literals need brackets.
case "$HOST" in
  0.0.0.0 | :: | "[::]") shown=127.0.0.1 ;;
  *:*) shown="[${HOST#[}"; shown="${shown%]}]" ;;
  *) shown=$HOST ;;
esac
export JANCTION_SITE_URL=${JANCTION_SITE_URL:-http://$shown:$PORT}
export JANCTION_STATIC_COLLECTED=1

mkdir -p "${JANCTION_VAR_DIR:-var}"
"$PY" manage.py migrate --noinput -v0
"$PY" manage.py collectstatic --noinput -v0
"$PY" manage.py seed_demo
exec "$PY" manage.py run_embedded --host "$HOST" --port "$PORT"
