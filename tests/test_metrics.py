"""/metrics: who may read it, the listener of its own, and counts fed at the event sites
(the Prometheus test in tests/broker checks the whole picture with real desktops)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.vms.errors import VmError
from app.vms.operations import OperationContext
from tests.dashboard import DashboardFactory, free_port

TOKEN = "metrics-token-for-tests-0123"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_need_a_configured_token_and_its_bearer(dashboard_factory: DashboardFactory) -> None:
    unconfigured = await dashboard_factory()
    async with httpx.AsyncClient(base_url=unconfigured.url) as http:
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404
    configured = await dashboard_factory(metrics={"token": TOKEN}, admin_password=None)
    async with httpx.AsyncClient(base_url=configured.url) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200 and right.headers["content-type"].startswith("text/plain")
    assert ("kvmvdi_console_connections", ()) in samples(right.text)


async def test_a_listener_of_its_own_serves_metrics_alone(dashboard_factory: DashboardFactory) -> None:
    port = free_port()
    running = await dashboard_factory(metrics={"host": "127.0.0.1", "port": port})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = await http.get("/metrics")
        assert answer.status_code == 200 and "kvmvdi_hypervisors" in answer.text
        assert (await http.get("/login")).status_code == 404
    # The dashboard's own port does not serve them without a token.
    async with httpx.AsyncClient(base_url=running.url) as http:
        assert (await http.get("/metrics")).status_code == 404


async def test_failed_and_succeeded_operations_are_counted_with_their_duration(
    dashboard_factory: DashboardFactory,
) -> None:
    running = await dashboard_factory(metrics={"token": TOKEN})
    operations = running.services.vms.operations

    async def fails(context: OperationContext) -> str:
        raise VmError("the disk is full")

    async def works(context: OperationContext) -> str:
        return "done"

    for work in (fails, works, fails):
        await operations.wait(await operations.start("probe", work))
    async with httpx.AsyncClient(base_url=running.url) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    found = samples(text)
    assert found[("kvmvdi_operations_total", (("kind", "probe"), ("result", "failed")))] == 2
    assert found[("kvmvdi_operations_total", (("kind", "probe"), ("result", "succeeded")))] == 1
    assert found[("kvmvdi_operation_duration_seconds_count", (("kind", "probe"),))] == 3
    assert found[("kvmvdi_operations_running", (("kind", "probe"),))] == 0
