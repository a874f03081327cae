#!/usr/bin/env bash
# The main job on embedded defaults, from a fresh machine: install, then run `triphase demo` - the
# whole loop (synthetic studies -> DICOM node -> grouping, compositing, classification -> SR and
# Secondary Capture stored in a stand-in PACS -> evaluation) with no server to install. Results go
# to ~/.local/share/triphase/demo. Arguments are passed to `triphase demo`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/deploy/bootstrap.sh" | tail -n 1)
exec "$VENV/bin/triphase" demo "$@"
