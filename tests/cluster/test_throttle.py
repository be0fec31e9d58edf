"""Log-in throttling counts the failed attempts made through every replica."""

from __future__ import annotations

import httpx
import pytest

from tests.broker.records import CLIENT_PASSWORD
from tests.cluster.desktops import ClusterDesktops
from tests.cluster.lab import ClusterLab

pytestmark = [pytest.mark.cluster]


async def test_failed_log_ins_through_all_replicas_add_up_to_one_limit(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    user = cluster_desktops.users[7]
    replicas = cluster.replicas
    async with httpx.AsyncClient(timeout=30) as http:
        # security.login_max_failures (5) wrong passwords, spread over the three replicas ...
        for attempt in range(5):
            replica = replicas[attempt % len(replicas)]
            wrong = await http.post(
                f"{replica.url}/api/v1/login", json={"username": user, "password": f"wrong-{attempt}"}
            )
            assert wrong.status_code == 401, wrong.text
        # ... and every replica now refuses even the right one, until the window passes.
        for replica in replicas:
            refused = await http.post(
                f"{replica.url}/api/v1/login", json={"username": user, "password": CLIENT_PASSWORD}
            )
            assert refused.status_code == 429, (replica.name, refused.text)
            assert int(refused.headers["Retry-After"]) > 0
