"""The cluster bus: what one replica publishes reaches the others, on channels subscribed at any time."""

from __future__ import annotations

from typing import Any

import pytest

from app.cluster.bus import RedisBus
from tests.services.redis import RedisServer
from tests.waiting import eventually

pytestmark = [pytest.mark.cluster]


async def test_a_channel_subscribed_after_the_bus_started_hears_the_other_replicas(
    redis_server: RedisServer,
) -> None:
    # The bus starts first (the lifespan joins it before building anything); the live hub, the
    # console service and the inventory subscribe afterwards.
    speaker = RedisBus(redis_server.url, origin="bus-a")
    listener = RedisBus(redis_server.url, origin="bus-b")
    await speaker.start()
    await listener.start()
    try:
        heard: list[dict[str, Any]] = []
        listener.subscribe("bus-test", heard.append)

        def delivered() -> bool:
            # Published again until heard: a subscription takes effect when Redis confirms it.
            if not heard:
                speaker.publish("bus-test", {"n": 1})
            return bool(heard)

        await eventually(delivered, "a message on a channel subscribed after the start", interval=0.2)
        assert heard[0] == {"n": 1}
        # A replica does not hear itself: the listener's own message goes through Redis (the
        # speaker hears it) and, before the speaker's answer, reaches the listener, which drops it.
        told: list[dict[str, Any]] = []
        speaker.subscribe("bus-test", told.append)
        heard.clear()

        def answered() -> list[dict[str, Any]]:
            listener.publish("bus-test", {"n": 2})
            return told

        await eventually(answered, "the speaker hearing the listener")
        speaker.publish("bus-test", {"n": 3})
        await eventually(lambda: {"n": 3} in heard, "the speaker's answer")
        assert {"n": 2} not in heard, heard
    finally:
        await speaker.stop()
        await listener.stop()
