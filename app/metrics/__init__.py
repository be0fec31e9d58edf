"""Prometheus metrics.

Event counters (:mod:`.events`), state read at scrape time (:mod:`.state`), the ``/metrics``
exposition and its optional listener (:mod:`.exporter`), event-loop lag (:mod:`.loop_lag`).
"""

from app.metrics.events import Metrics
from app.metrics.exporter import Exporter, MetricsListener
from app.metrics.loop_lag import LoopLagMonitor

__all__ = ["Exporter", "LoopLagMonitor", "Metrics", "MetricsListener"]
