"""Alerts are sent once for the whole cluster: raised on any replica, delivered by the duty holder."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app import db as database
from tests.broker.records import CLIENT_PASSWORD, add_client, add_pool
from tests.cluster.lab import ALERT_RATE_LIMIT, ClusterLab
from tests.cluster.waiting import until
from tests.webhook_receiver import Received

pytestmark = [pytest.mark.cluster]


async def test_refusals_on_every_replica_make_one_alert_and_one_follow_up_for_the_cluster(
    cluster: ClusterLab,
) -> None:
    db = database.connect_database(cluster.database_url)
    await db.connect()
    try:
        user_ids = [await add_client(db, f"cl-alert-{replica.name}") for replica in cluster.replicas]
        pool_id = await add_pool(db, "Cluster empty room", [], user_ids)
    finally:
        await db.disconnect()

    async def refused(http: httpx.AsyncClient, token: str) -> None:
        response = await http.post(
            f"/api/v1/pools/{pool_id}/desktop", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.json()["error"] == "no_free_desktop", response.text

    clients = [httpx.AsyncClient(base_url=replica.url, timeout=30) for replica in cluster.replicas]
    try:
        tokens = []
        for http, replica in zip(clients, cluster.replicas, strict=True):
            login = await http.post(
                "/api/v1/login", json={"username": f"cl-alert-{replica.name}", "password": CLIENT_PASSWORD}
            )
            assert login.status_code == 200, login.text
            tokens.append(login.json()["token"])
        # One refusal on each replica, well within one rate-limit window.
        await asyncio.gather(*(refused(http, token) for http, token in zip(clients, tokens, strict=True)))
    finally:
        for http in clients:
            await http.aclose()

    def posted() -> list[Received]:
        return [hook for hook in cluster.alerts.received if hook.body["subject"] == "Cluster empty room"]

    # Every refusal is accounted for: sent, or counted in a later alert's "suppressed".
    await until(
        lambda: sum(1 + hook.body["suppressed"] for hook in posted()) >= 3,
        "alerts covering the three refusals",
        within=ALERT_RATE_LIMIT + 30,
    )
    hooks = posted()
    # One dispatcher for the cluster: the first alert at once, the other two held back by the
    # rate limit and summed up in one follow-up (one replica each would have sent three).
    assert [hook.body["suppressed"] for hook in hooks] == [0, 1], [hook.body for hook in hooks]
    assert all(hook.body["kind"] == "pool_exhausted" and hook.signature_ok for hook in hooks)
