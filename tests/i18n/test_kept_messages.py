"""Text written once and read later (an operation's progress, a hypervisor's state note) reaches each
admin in their language: in the JSON API, on the pages and on each live socket."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time
from typing import Any

from markupsafe import escape
from websockets.asyncio.client import ClientConnection, connect

from app.broker.schedule_times import When
from app.broker.schedules import Schedule, ScheduleSpec
from app.db.schema import operations
from app.i18n import use_language
from app.i18n.messages import M_, Mn_, shown
from app.vms.operations import OperationContext
from tests.dashboard import BrowserLikeClient, RunningDashboard
from tests.waiting import eventually

LITHUANIAN = {"Accept-Language": "lt"}


async def _socket(dashboard: RunningDashboard, admin: BrowserLikeClient, language: str) -> ClientConnection:
    return await connect(
        dashboard.url.replace("http://", "ws://") + "/live",
        origin=dashboard.url,  # type: ignore[arg-type]
        additional_headers={
            "Cookie": f"kvmvdi_session={admin.http.cookies.get('kvmvdi_session')}",
            "Accept-Language": language,
        },
        proxy=None,
    )


async def _operation_event(ws: ClientConnection, state: str) -> dict[str, Any]:
    """The next ``operation`` event in ``state`` (the hello and other topics are passed over)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        if message["topic"] == "operation" and message["data"]["state"] == state:
            data: dict[str, Any] = message["data"]
            return data


def test_a_kept_message_is_shown_in_the_readers_language_and_old_text_as_it_is() -> None:
    kept = M_("Defined {index} of {total}", index=1200, total=1500) + Mn_(
        "Creating {count} disk", "Creating {count} disks", 21, count=21
    )
    with use_language("lt"):
        assert kept.text() == "Aprašyta 1\xa0200 iš 1\xa0500 Kuriamas 21 diskas"
        assert shown("Defined 1 of 2", kept.to_json()) == kept.text()
        assert shown("Defined 1 of 2 (an old row)", "") == "Defined 1 of 2 (an old row)"
    assert kept.english() == "Defined 1,200 of 1,500 Creating 21 disks"


async def test_a_lithuanian_admin_sees_an_operations_progress_and_outcome_in_lithuanian(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    operations = dashboard.services.vms.operations
    go_on = asyncio.Event()

    async def work(op: OperationContext) -> Any:
        await op.progress(50, M_("Defined {index} of {total}", index=1, total=2))
        await go_on.wait()
        return M_("Created {names}.", names="pc-1, pc-2")

    async with (
        await _socket(dashboard, admin, "lt") as lithuanian,
        await _socket(dashboard, admin, "en") as english,
    ):
        op_id = await operations.start(
            "probe", work, message=Mn_("Creating {count} VM", "Creating {count} VMs", 2, count=2)
        )
        path = f"/api/v1/admin/operations/{op_id}"

        async def progressed() -> dict[str, Any] | None:
            answer: dict[str, Any] = (await admin.get(path, headers=LITHUANIAN)).json()["operation"]
            return answer if answer["progress"] == 50 else None

        assert (await eventually(progressed, what="the progress stored"))["message"] == "Aprašyta 1 iš 2"
        assert (await admin.get(path)).json()["operation"]["message"] == "Defined 1 of 2", (
            "English by default"
        )
        page = await admin.get("/vms", headers=LITHUANIAN)
        assert '<span class="op-message">Aprašyta 1 iš 2</span>' in page.text, "the operations in progress"
        pending = await _operation_event(lithuanian, "pending")
        assert pending["message"] == "Kuriamos 2 VM" and "message_i18n" not in pending
        assert (await _operation_event(english, "pending"))["message"] == "Creating 2 VMs"

        go_on.set()
        await operations.wait(op_id)
        assert (await _operation_event(lithuanian, "succeeded"))["message"] == "Sukurta: pc-1, pc-2."
        assert (await _operation_event(english, "succeeded"))["message"] == "Created pc-1, pc-2."
    answer = (await admin.get(path, headers=LITHUANIAN)).json()["operation"]
    assert answer["message"] == "Sukurta: pc-1, pc-2." and answer["state"] == "succeeded"


async def test_a_lithuanian_admin_reads_a_hypervisors_state_note_in_lithuanian(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    async with await _socket(dashboard, admin, "lt") as lithuanian:
        created = await admin.post(
            "/api/v1/admin/hypervisors",
            json={"name": "broken", "transport": "test", "libvirt_uri": "test:///no/such/host.xml"},
        )
        assert created.status_code == 201, created.text
        path = f"/api/v1/admin/hypervisors/{created.json()['id']}"

        async def down() -> dict[str, Any] | None:
            answer: dict[str, Any] = (await admin.get(path, headers=LITHUANIAN)).json()
            return answer if answer["state"] == "down" else None

        note = (await eventually(down, what="the hypervisor found down"))["reason"]
        # The sentence is Lithuanian; libvirt's own words inside it stay as libvirt said them.
        assert note.startswith("libvirt nepasiekiamas adresu test:///no/such/host.xml: "), note
        english = (await admin.get(path)).json()["reason"]
        assert english.startswith("libvirt is not available at test:///no/such/host.xml: "), english
        assert note.removeprefix("libvirt nepasiekiamas adresu ") == english.removeprefix(
            "libvirt is not available at "
        )
        while True:
            message = json.loads(await asyncio.wait_for(lithuanian.recv(), timeout=30))
            if message["topic"] == "hypervisor" and message["data"].get("state") == "down":
                break
        assert message["data"]["reason"] == note and "reason_i18n" not in message["data"]
    page = await admin.get("/hypervisors", headers=LITHUANIAN)
    assert f'<span data-field="reason">{escape(note)}</span>' in page.text


def test_a_schedule_is_described_in_the_readers_language() -> None:
    def schedule(kind: str, days: set[int], count: int = 0) -> Schedule:
        when = When(frozenset(days), time(7, 30), time(17, 0) if kind == "keep_ready" else None)
        spec = ScheduleSpec(kind, when, count)  # type: ignore[arg-type]
        return Schedule(1, 1, spec, "admin", datetime(2026, 12, 1))

    window, nightly = schedule("keep_ready", {0, 2}, 21), schedule("power_off", {5, 6})
    with use_language("lt"):
        assert window.describe() == "Pr, tr 07:30\u201317:00: laikyti paleistą 21 darbalaukį"
        assert nightly.describe() == "Savaitgaliais 07:30: išjungti laisvus darbalaukius"
        assert window.describe_english() == "Mon, Wed 07:30\u201317:00: keep 21 started", "the audit log's"
    assert nightly.describe() == "Weekends 07:30: power off free desktops"


async def test_an_operation_interrupted_by_a_gone_replica_says_so_in_the_readers_language(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    op_id = await dashboard.services.db.execute(
        operations.insert().values(
            kind="probe", state="running", progress=40.0, message="", replica="web-gone"
        )
    )
    assert await dashboard.services.vms.operations.interrupt_gone(alive=set()) == [op_id]
    path = f"/api/v1/admin/operations/{op_id}"
    said = (await admin.get(path, headers=LITHUANIAN)).json()["operation"]["message"]
    assert (
        said
        == "Nutraukta ties 40 %: valdymo skydelio kopija web-gone nustojo atsakyti vykstant šiai operacijai."
    )
    english = (await admin.get(path)).json()["operation"]["message"]
    assert (
        english == "Interrupted at 40 %: dashboard replica web-gone stopped answering during this operation."
    )
