"""The start-up heap kept out of the cyclic garbage collector's full passes.

What the dashboard builds at start-up (modules, templates, catalogues, the database schema,
connection pools, services) lives as long as the process, yet every full collection walks
all of it again while holding the GIL, and every console stream of the process stands still
meanwhile. ``gc.freeze()`` moves what exists now into a generation the collector never scans;
objects made later are collected as usual. Once per process: the test suite starts many
dashboards in one interpreter, and freezing again would pin its earlier tests' garbage.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> bool:
    """Collect once, then freeze what is left; ``False`` when this process already did."""
    global _frozen
    if _frozen:
        return False
    gc.collect()
    gc.freeze()
    _frozen = True
    return True
