"""A real Prometheus scrapes a dashboard while desktops are requested and consoles opened: what it
stores must match what happened. The Grafana dashboard in deploy/ asks only for what it scraped."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from app.db.schema import audit_log
from tests.broker.desktop_lab import LAB_SETTINGS, DesktopLab, iso_dirs_kept, link_through_gateway
from tests.dashboard import REPO
from tests.services.libvirt_host import LibvirtHost
from tests.services.prometheus import Prometheus
from tests.vms.world import WorldFactory

pytestmark = pytest.mark.kvm

GRAFANA = REPO / "deploy" / "grafana" / "kvm-vdi.json"


@pytest.fixture
async def watched(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, prometheus: Prometheus
) -> AsyncIterator[DesktopLab]:
    """Desktops on h0, the dashboard's /metrics scraped by Prometheus every second."""
    with iso_dirs_kept([hypervisor_host]):
        world = await world_factory([hypervisor_host], **LAB_SETTINGS, metrics={"token": prometheus.token})
        prometheus.scrape(f"127.0.0.1:{world.dashboard.settings.server.port}", run=world.tag)
        lab = DesktopLab(world)
        yield lab
        await lab.aclose()


def one(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


async def until(prometheus: Prometheus, expr: str, expected: float, timeout: float = 60) -> None:
    """Until Prometheus holds ``expected`` for ``expr`` (a sum over its series)."""

    def reached(result: list[dict[str, Any]]) -> bool:
        return sum(float(item["value"][1]) for item in result) == expected

    await asyncio.to_thread(prometheus.wait_for, expr, reached, timeout=timeout)


async def test_prometheus_sees_desktops_consoles_log_ins_and_operations_as_they_happened(
    watched: DesktopLab, prometheus: Prometheus
) -> None:
    lab = watched
    world = lab.world
    vm = await lab.desktop_vm("m1")
    ann_id, ann = await lab.client("ann")
    bob_id, bob = await lab.client("bob")
    wrong = await lab.http.post("/api/v1/login", json={"username": "ann", "password": "not-the-password-1"})
    assert wrong.status_code == 401
    pool_id = await lab.pool("metrics", [vm], [ann_id, bob_id])
    pool = world.name("metrics")
    statuses, desktop = await ann.ready(pool_id)
    refused = await bob.request(pool_id)
    assert refused.status_code == 409 and refused.json()["error"] == "no_free_desktop"
    batch = await world.service.create(
        {
            "prefix": world.name("mb"),
            "count": 2,
            "hypervisor_id": world.h0.id,
            "memory_mib": 64,
            "disk_size_gib": 1,
        }
    )
    assert batch.operation_id is not None
    assert (await world.dashboard.services.vms.operations.wait(batch.operation_id)).state == "succeeded"
    admin = await world.admin()
    live = await connect(
        world.dashboard.url.replace("http://", "ws://") + "/live",
        origin=world.dashboard.url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"kvmvdi_session={admin.http.cookies.get('kvmvdi_session')}"},
        proxy=None,
    )
    linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
    assert linked.ok, linked
    p = f'pool="{pool}"'
    try:
        # While ann holds the desktop with its console open.
        await until(prometheus, 'kvmvdi_console_sessions{via="gateway"}', 1)
        await until(prometheus, f'kvmvdi_pool_desktops{{{p},state="in_use"}}', 1)
        assert one(prometheus, f'kvmvdi_pool_desktops{{{p},state="free"}}') == 0
        assert one(prometheus, f"kvmvdi_pool_leases{{{p}}}") == 1
        assert one(prometheus, 'kvmvdi_hypervisor_up{hypervisor="h0"}') == 1
        assert one(prometheus, 'kvmvdi_hypervisors{state="up"}') == 1
        assert one(prometheus, "kvmvdi_console_connections") >= 1
        await until(prometheus, 'kvmvdi_live_subscribers{kind="admin"}', 1)
    finally:
        stream.close()
        await live.close()

    # Ended: the session's length, its bytes exactly as the audit log recorded them.
    await until(prometheus, 'kvmvdi_console_session_duration_seconds_count{via="gateway"}', 1)
    await until(prometheus, 'kvmvdi_console_sessions{via="gateway"}', 0)
    row = await lab.services.db.fetch_one(audit_log.select().where(audit_log.c.action == "console.session"))
    recorded = json.loads(row.details_json)
    assert recorded["bytes_to_client"] > 0 and recorded["bytes_to_vm"] > 0
    await until(prometheus, 'kvmvdi_console_bytes_total{direction="to_client"}', recorded["bytes_to_client"])
    assert one(prometheus, 'kvmvdi_console_bytes_total{direction="to_vm"}') == recorded["bytes_to_vm"]

    # Requests by answer, refusals by reason, one latency sample per answer.
    answers = {status: statuses.count(status) for status in set(statuses)} | {"refused": 1}
    requests = prometheus.values(f"kvmvdi_desktop_requests_total{{{p}}}", "status")
    assert requests == {status: float(n) for status, n in answers.items()}, (requests, statuses)
    assert prometheus.values(f"kvmvdi_desktop_refusals_total{{{p}}}", "reason") == {"no_free_desktop": 1.0}
    assert one(prometheus, f"kvmvdi_desktop_request_duration_seconds_count{{{p}}}") == len(statuses) + 1
    # Log-ins: the admin's (world set-up and above), ann's and bob's, ann's mistake.
    logins = {
        (i["metric"]["area"], i["metric"]["result"]): float(i["value"][1])
        for i in prometheus.query("kvmvdi_logins_total")
    }
    assert logins == {("admin", "success"): 2.0, ("api", "success"): 2.0, ("api", "failure"): 1.0}, logins
    assert one(prometheus, 'kvmvdi_operations_total{kind="create_vms",result="succeeded"}') == 1
    assert one(prometheus, 'kvmvdi_operation_duration_seconds_count{kind="create_vms"}') == 1
    assert one(prometheus, "kvmvdi_event_loop_lag_seconds_count") > 0

    # The Grafana dashboard's queries: every metric they name was scraped, and each query runs.
    scraped = set(prometheus.api("label/__name__/values"))
    for expr in grafana_queries():
        assert metric_names(expr) <= scraped, (expr, metric_names(expr) - scraped)
        prometheus.query(grafana_ready(expr))


def grafana_queries() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 15
    return queries


def grafana_ready(expr: str) -> str:
    """The query as Grafana sends it: variables filled in."""
    return expr.replace("$__rate_interval", "1m").replace('"$pool"', '".*"').replace('"$job"', '".*"')


_FUNCTIONS = {"sum", "max", "rate", "increase", "histogram_quantile", "by", "le"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers not inside braces, not functions or labels)."""
    without_matchers = re.sub(r"\{[^}]*\}|\[[^]]*\]|\"[^\"]*\"", " ", expr)
    without_groupings = re.sub(r"\bby\s*\([^)]*\)", " ", without_matchers)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings))
    return {word for word in words - _FUNCTIONS if word.startswith(("kvmvdi_", "process_"))}
