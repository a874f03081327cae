"""The cyclic garbage collector, set for a process that receives instances all day.

Profiled with four associations on two receiving processes, CPython's cyclic collector took about
a sixth of the node's CPU: every collection of the oldest generation walked every object the
process had made at start-up (pynetdicom's 170 storage contexts with their transfer syntaxes,
pydicom's data dictionary, SQLAlchemy's compiled statements, the modules themselves), although
none of them ever becomes garbage. Freezing them once the node serves moves them out of the
collector's sight for good; collecting the youngest generation every 10,000 allocations instead of
every 700 makes the rest rarer. Reference counting still frees almost everything at once; the
collector only finds cycles, which a C-STORE makes few of, so memory stays as it was.
"""

from __future__ import annotations

import gc

YOUNGEST_THRESHOLD = 10_000
"""Allocations (minus deallocations) of tracked objects between collections of the youngest
generation; CPython's default is 700."""


def settle() -> None:
    """Freeze what exists now (call once the node has started) and collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)
