#!/usr/bin/env bash
# The main job on embedded defaults, from a fresh machine: install, then run the DICOM node with
# the embedded SQLite database and spool under ~/.local/share/triphase (no server to install).
# Send it studies from any PACS or with `triphase send DIR --to TRIPHASE@127.0.0.1:11112`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/deploy/bootstrap.sh" | tail -n 1)
export TRIPHASE_NODE__PROMISCUOUS=${TRIPHASE_NODE__PROMISCUOUS:-true}
"$VENV/bin/triphase" db upgrade
exec "$VENV/bin/triphase" node "$@"
