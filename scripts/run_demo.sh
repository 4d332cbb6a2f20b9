#!/usr/bin/env bash
# Serve Celltrace on 127.0.0.1:8000 while a simulated line keeps producing.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

$PY manage.py simulate --live --seed "${SEED:-7}" &
SIM=$!
cleanup() {
    kill "$SIM" 2>/dev/null || true
    wait "$SIM" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

$PY manage.py demo_logins
echo "Celltrace is serving on http://127.0.0.1:8000/  (Ctrl-C stops the server and the line)"
$PY manage.py runserver 127.0.0.1:8000 --noreload
