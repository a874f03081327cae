#!/usr/bin/env bash
# Install triphase and its Python dependencies into a virtual environment. Idempotent and quick
# when nothing changed: dependencies are reinstalled only when pyproject.toml changes.
#   TRIPHASE_VENV  where the environment lives (default ~/.cache/triphase/venv)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TRIPHASE_VENV:-$HOME/.cache/triphase/venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.triphase-deps"
want=$(cat "$ROOT/pyproject.toml" "$ROOT/deploy/bootstrap.sh" | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "bootstrap: installing dependencies (torch from this machine's disk; first run takes minutes)" >&2
  # torch/torchvision pinned to the builds this kind of machine has on disk (pip, not uv/poetry).
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "setuptools>=68" wheel \
    "torch==2.14.1" "torchvision==0.29.1" -e "$ROOT[ml,test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$VENV/bin/python" -c "import torch, torchvision, pynetdicom, sqlalchemy, celery" \
    || { echo "bootstrap: dependency installation failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# Always point the environment at this checkout (cheap; a venv may serve several clones).
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" \
  2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/triphase" --help >/dev/null || { echo "bootstrap: triphase is not runnable" >&2; exit 1; }
echo "$VENV"
