"""The /live websocket: session required, own origin only, audience-filtered JSON, laggards closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.db.schema import users
from app.live.hub import QUEUE_LIMIT
from tests.client_session import client_user_session
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard
from tests.waiting import eventually


def _ws_url(dashboard: RunningDashboard) -> str:
    return dashboard.url.replace("http://", "ws://") + "/live"


def _cookie_header(client: BrowserLikeClient) -> dict[str, str]:
    return {"Cookie": f"kvmvdi_session={client.http.cookies.get('kvmvdi_session')}"}


async def _open(
    dashboard: RunningDashboard, client: BrowserLikeClient | None, origin: str | None = None
) -> Any:
    return connect(
        _ws_url(dashboard),
        origin=origin or dashboard.url,  # type: ignore[arg-type]
        additional_headers=_cookie_header(client) if client else None,
        proxy=None,
    )


async def _receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=10))


async def test_an_admin_receives_hub_events_as_json(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    async with await _open(dashboard, admin) as ws:
        assert await _receive(ws) == {"topic": "hello", "data": {"user": "admin"}}
        dashboard.services.hub.publish("hypervisor", {"id": 7, "state": "up", "reason": ""})
        message = await _receive(ws)
        assert message["topic"] == "hypervisor"
        assert message["data"] == {"id": 7, "state": "up", "reason": ""}


async def test_without_a_session_the_socket_closes_with_4401(dashboard: RunningDashboard) -> None:
    async with await _open(dashboard, None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await _receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_foreign_origin_is_refused_at_the_handshake(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    for origin in ["http://evil.example", "https://127.0.0.1:1", "null"]:
        with pytest.raises(InvalidStatus) as refused:
            async with await _open(dashboard, admin, origin=origin):
                pass
        assert refused.value.response.status_code == 403, origin
    assert dashboard.services.hub.subscriber_count == 0


async def test_configured_public_origins_are_accepted(dashboard_factory: DashboardFactory) -> None:
    running = await dashboard_factory(server={"public_origins": ["https://vdi.example.org"]})
    admin = await running.admin()
    async with await _open(running, admin, origin="https://vdi.example.org") as ws:
        assert (await _receive(ws))["topic"] == "hello"


async def test_a_client_user_gets_only_its_own_events(dashboard: RunningDashboard) -> None:
    client = await client_user_session(dashboard)
    user = await dashboard.services.db.fetch_one(users.select().where(users.c.username == "desk-user"))
    assert user is not None
    async with await _open(dashboard, client) as ws:
        assert (await _receive(ws))["data"] == {"user": "desk-user"}
        hub = dashboard.services.hub
        hub.publish("hypervisor", {"id": 1, "state": "down"})  # admins only
        hub.publish("lease", {"id": 5}, admins=True, user_ids={user["id"] + 1000})  # someone else's
        hub.publish("lease", {"id": 6}, admins=False, user_ids={user["id"]})
        message = await _receive(ws)
        assert (message["topic"], message["data"]) == ("lease", {"id": 6})


async def test_a_subscriber_that_falls_behind_is_closed_and_released(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    hub = dashboard.services.hub
    async with await _open(dashboard, admin) as ws:
        await _receive(ws)
        assert hub.subscriber_count == 1
        # Published faster than any socket drains: the queue overflows before the sender runs.
        for index in range(QUEUE_LIMIT + 5):
            hub.publish("operation", {"id": index})
        assert hub.subscriber_count == 0, "a lagging subscriber stops receiving at once"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await _receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_closing_the_browser_side_unsubscribes(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    async with await _open(dashboard, admin) as ws:
        await _receive(ws)
        assert dashboard.services.hub.subscriber_count == 1
    await eventually(lambda: dashboard.services.hub.subscriber_count == 0, "the closed socket unsubscribed")


async def test_the_socket_closes_when_the_session_expires(dashboard_factory: DashboardFactory) -> None:
    running = await dashboard_factory(security={"session_max_age": 2})
    admin = await running.admin()
    async with await _open(running, admin) as ws:
        await _receive(ws)
        with pytest.raises(ConnectionClosed) as closed:
            await _receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_one_user_holds_a_bounded_number_of_live_sockets(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    limit = dashboard.settings.server.live_per_user_limit
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(limit):
            ws = await stack.enter_async_context(await _open(dashboard, admin))
            assert (await _receive(ws))["topic"] == "hello"
        async with await _open(dashboard, admin) as extra:
            with pytest.raises(ConnectionClosed) as closed:
                await _receive(extra)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    # Closed sockets free their places.
    await eventually(lambda: dashboard.services.hub.subscriber_count == 0, "the closed sockets unsubscribed")
    async with await _open(dashboard, admin) as ws:
        assert (await _receive(ws))["topic"] == "hello"
