"""One logging set-up for every triphase process: the command itself and the processes it spawns
(receivers, the outbox sweeper), so their lines look alike in one log."""

from __future__ import annotations

import logging
import sys

# Quieter than the level asked for, unless it is DEBUG: alembic announces every migration step,
# pynetdicom logs transport errors that our own messages already explain in one line, and highdicom
# logs UIDs at INFO (patient-related identifiers stay at DEBUG).
QUIETER = {"alembic": logging.WARNING, "pynetdicom": logging.CRITICAL, "highdicom": logging.WARNING}


def configure_logging(level: str, *, label: str = "") -> None:
    """Log to stderr at ``level``; ``label`` (e.g. "receiver 2") names the process on every line."""
    tag = f"[{label}]" if label else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
                        stream=sys.stderr)
    if level != "DEBUG":
        for name, quieter in QUIETER.items():
            logging.getLogger(name).setLevel(quieter)
