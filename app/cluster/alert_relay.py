"""Alerts raised on any replica, delivered by one: a Redis list between them.

Each replica raises an alert where it sees the cause (a desktop request refused on it, an
operation failed on it). Delivering is a background duty: the duty holder takes the alerts
off the list in the order they were raised and hands them to its dispatcher, so the rate
limit counts the whole cluster and each alert goes out once, not once per replica. The list
outlives a change of duty holder (alerts raised meanwhile wait for the next one) and is
bounded (beyond :data:`LIMIT` the oldest are dropped).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.alerts.model import Alert
from app.cluster.bus import PREFIX

log = logging.getLogger("kvmvdi.cluster.alerts")

KEY = PREFIX + "alerts"
LIMIT = 1000
# Seconds one BRPOP waits: below the Redis client's socket timeout.
WAIT = 2
RETRY_AFTER = 1.0


class RedisAlertRelay:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def push(self, alert: Alert) -> None:
        """Put ``alert`` on the list for the duty holder; raises when Redis does not take it."""
        payload = json.dumps(alert.to_record(), default=str)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(KEY, payload)
            pipe.ltrim(KEY, 0, LIMIT - 1)
            await pipe.execute()

    async def deliver(self, dispatch: Callable[[Alert], None]) -> None:
        """The duty: take alerts off the list, oldest first, and ``dispatch`` them; until cancelled."""
        while True:
            try:
                found = await self._redis.brpop([KEY], timeout=WAIT)
            except (RedisError, OSError) as exc:
                log.warning("alerts not read from Redis: %s", exc)
                await asyncio.sleep(RETRY_AFTER)
                continue
            if found is None:
                continue
            try:
                alert = Alert.from_record(json.loads(found[1]))
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("unreadable alert on the cluster's list dropped: %s", exc)
                continue
            dispatch(alert)
