"""Synchronous observers given to a component at construction: metrics and alerts hear about
events (a log-in, an ended console session, a finished operation, an answered desktop request)
without the component knowing who listens.

Observers run on the producer's path, so they must only count or enqueue; one that raises
is logged and never stops the others or the producer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger("kvmvdi.observers")

T = TypeVar("T")


class Observers(Generic[T]):
    def __init__(self, kind: str, callbacks: Iterable[Callable[[T], None]] = ()) -> None:
        self._kind = kind
        self._callbacks = tuple(callbacks)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def __call__(self, item: T) -> None:
        for callback in self._callbacks:
            try:
                callback(item)
            except Exception:
                log.exception("%s observer %r failed", self._kind, callback)
