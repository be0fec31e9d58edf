"""No secret in any log line: a dashboard's log at DEBUG, through log-ins (admin, portal, broker API,
a wrong password), hypervisor commands over SSH, a desktop handed out and its console used through
the gateway, scanned for every password, ticket, token and cookie that went by."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from app.logging_setup import REQUEST_ID_HEADER
from tests.broker.desktop_lab import GENEROUS, DesktopLab, link_through_gateway
from tests.broker.records import CLIENT_PASSWORD
from tests.dashboard import ADMIN_PASSWORD
from tests.log_capture import dashboard_logging
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

WRONG_PASSWORD = "typed-into-the-wrong-box-77"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The dashboard's log from before the lab's dashboard starts (request this fixture first)."""
    with dashboard_logging(log_level="DEBUG", access_log=True) as out:
        yield out


async def test_log_ins_commands_and_consoles_leave_no_secret_in_the_log(
    captured: io.StringIO, lab: DesktopLab
) -> None:
    dashboard = lab.world.dashboard
    vm = await lab.desktop_vm("secrets")  # qemu-img and friends over SSH
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("secrets", [vm], [user_id])
    _, desktop = await ann.ready(pool_id)
    linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
    stream.close()
    assert linked.ok, linked
    refused = await lab.http.post("/api/v1/login", json={"username": "ann", "password": WRONG_PASSWORD})
    assert refused.status_code == 401
    portal = dashboard.client()
    assert (await portal.login("ann", CLIENT_PASSWORD, path="/client/login")).status_code == 303
    admin = await dashboard.admin()
    await eventually(
        lambda: "console.session" in captured.getvalue(), "the console session logged", timeout=GENEROUS
    )

    log = captured.getvalue()
    secrets = {
        "admin password": ADMIN_PASSWORD,
        "client password": CLIENT_PASSWORD,
        "mistyped password": WRONG_PASSWORD,
        "broker API token": ann.token,
        "console ticket": desktop.ticket,
        "SPICE password": desktop.connection["password"],
        "session secret": dashboard.settings.session_secret(),
        "CSRF token": admin.csrf or "",
        **{f"cookie {name}": value for name, value in admin.http.cookies.items()},
        **{f"portal cookie {name}": value for name, value in portal.http.cookies.items()},
    }
    db_password = make_url(dashboard.settings.database_url.get_secret_value()).password
    if db_password:
        secrets["database password"] = db_password
    assert all(len(value) >= 8 for value in secrets.values()), "a secret too short to scan for"
    leaked = [name for name, value in secrets.items() if value in log]
    assert not leaked, f"in the log: {leaked}"

    # The scan saw the work: SSH commands ran, log-ins were audited within their requests ...
    assert "console.session actor=ann" in log and "login_failed actor=ann" in log
    login_line = next(
        line for line in log.splitlines() if "login actor=ann" in line and "area': 'api'" in line
    )
    assert "[-]" not in login_line
    assert refused.headers[REQUEST_ID_HEADER] in log
    # ... and the libraries kept their routine to themselves (asyncssh logs each channel at INFO).
    assert " INFO asyncssh" not in log and " DEBUG asyncssh" not in log
