"""The node's commands start without the machine-learning stack, as a node host has none installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sklearn", "highdicom", "matplotlib")

# Runs ``triphase ARGS`` in this interpreter, then prints the heavy modules it loaded.
PROBE = f"""
import sys
from worker.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
sys.exit(code)
"""


def triphase(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env.update(PYTHONPATH=str(ROOT), TRIPHASE_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("args", [("node", "--help"), ("echo", "--help"), ("send", "--help"),
                                  ("studies", "--help"), ("studies", "--json")])
def test_node_commands_import_no_machine_learning(tmp_path: Path, args: tuple[str, ...]) -> None:
    run = triphase(tmp_path, *args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", [("batch", "--help"), ("batch", "import", "--help")])
def test_batch_commands_start_without_the_training_code(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A batch is registered and queued here; the analysis runs in the worker. Loading torch first
    made `triphase batch import` take seconds before it read a file."""
    run = triphase(tmp_path, *args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"
