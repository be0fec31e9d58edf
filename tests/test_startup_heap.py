"""The start-up heap is frozen out of the cyclic collector's full passes, once per process.

A full collection holds the GIL while it walks every tracked object; the start-up heap
(modules, templates, catalogues, schema, services) never dies, so walking it only stalls
console streams. Measured with `python -m bench.soak`: the frozen part was ~180,000 objects,
about 40 % of a full pass's work under 1,000 open consoles.
"""

from __future__ import annotations

import gc

from app.server.heap import freeze_startup_heap
from tests.dashboard import RunningDashboard


async def test_a_started_dashboard_has_frozen_its_startup_heap(dashboard: RunningDashboard) -> None:
    # The first dashboard of this process froze what existed then (the ones after it did not).
    assert dashboard.services is not None
    assert gc.get_freeze_count() > 0


def test_the_heap_is_frozen_only_once_per_process() -> None:
    freeze_startup_heap()  # a dashboard started earlier in this process may have done it already
    assert freeze_startup_heap() is False
