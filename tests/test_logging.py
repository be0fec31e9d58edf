"""Logs an operator can read: one line per event, a request id on each line of a request,
JSON for collectors, and the libraries' routine chatter kept out by default."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest

from app.background import Periodic
from app.db.health import DatabaseUnavailable
from app.hyper.events import Listeners
from app.logging_setup import REQUEST_ID
from tests.dashboard import RunningDashboard
from tests.log_capture import dashboard_logging
from tests.served import ServedDashboard
from tests.services.rundir import RunDir
from tests.waiting import eventually


def test_a_text_line_names_level_logger_and_request_and_stays_one_line() -> None:
    with dashboard_logging() as out:
        token = REQUEST_ID.set("req-42")
        try:
            logging.getLogger("kvmvdi.test").warning("first\nsecond")
        finally:
            REQUEST_ID.reset(token)
        logging.getLogger("kvmvdi.test").info("outside")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith("WARNING kvmvdi.test [req-42] first\\nsecond")
    assert lines[1].endswith("INFO kvmvdi.test [-] outside")


def test_json_lines_carry_the_same_fields_and_an_exception_in_one_line() -> None:
    with dashboard_logging(log_format="json") as out:
        token = REQUEST_ID.set("abc")
        try:
            raise ValueError("broken")
        except ValueError:
            logging.getLogger("kvmvdi.test").exception("it failed")
        finally:
            REQUEST_ID.reset(token)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert (entry["level"], entry["logger"], entry["request_id"], entry["message"]) == (
        "ERROR",
        "kvmvdi.test",
        "abc",
        "it failed",
    )
    assert "ValueError: broken" in entry["exception"] and entry["time"].endswith("+00:00")


@pytest.mark.parametrize("library", ["asyncssh", "uvicorn.access", "libvirt", "databases"])
def test_library_chatter_stays_out_at_the_default_level_and_comes_back_when_asked(library: str) -> None:
    with dashboard_logging(log_level="DEBUG") as quiet:
        logging.getLogger(library).info("routine detail")
        logging.getLogger(library).warning("worth knowing")
        logging.getLogger("kvmvdi.x").debug("ours at debug")
    assert "routine detail" not in quiet.getvalue()
    assert "worth knowing" in quiet.getvalue() and "ours at debug" in quiet.getvalue()
    with dashboard_logging(library_log_level="info") as chatty:
        logging.getLogger(library).info("routine detail")
    assert "routine detail" in chatty.getvalue()


async def test_a_database_outage_in_background_work_is_one_warning_line() -> None:
    """The outage is reported by the database's health; any other failure keeps its traceback."""
    failures = [DatabaseUnavailable("the database cannot be reached (gone away)"), ValueError("a bug")]
    tried: list[str] = []

    async def step() -> None:
        if failures:
            tried.append(type(failures[0]).__name__)
            raise failures.pop(0)

    async def listener(event: str) -> None:
        raise DatabaseUnavailable(f"the database did not answer while handling {event}")

    listeners: Listeners[str] = Listeners("domain")
    listeners.add(listener)
    with dashboard_logging() as out:
        periodic = Periodic("lease purge", step, interval=0.01)
        await periodic.start()
        await eventually(lambda: len(tried) == 2 and "a bug" in out.getvalue(), "both failures logged")
        await periodic.stop()
        await listeners.emit("stopped")
    text = out.getvalue()
    assert (
        "WARNING kvmvdi.background [-] lease purge failed; it runs again in 0.01 s: the database cannot be "
        in text
    )
    assert "WARNING kvmvdi.hyper.events [-] domain listener" in text and "while handling stopped" in text
    # One traceback: the bug's, none for the outages.
    assert text.count("Traceback") == 1 and "ValueError: a bug" in text
    assert "DatabaseUnavailable" not in text


async def test_every_answer_carries_a_request_id_that_its_log_lines_share(
    dashboard: RunningDashboard,
) -> None:
    client = dashboard.client()
    with dashboard_logging(access_log=True) as out:
        await client.refresh_csrf()
        failed = await client.post("/login", {"username": "nobody", "password": "wrong-password-123"})
        given = await client.get("/login", headers={"X-Request-ID": "lb-7f3a.1"})
        forged = await client.get("/login", headers={"X-Request-ID": "a b] INFO kvmvdi FAKE"})
    request_id = failed.headers["X-Request-ID"]
    assert len(request_id) == 16
    # A proxy's plain id is kept; anything else is replaced by a fresh one.
    assert given.headers["X-Request-ID"] == "lb-7f3a.1"
    assert len(forged.headers["X-Request-ID"]) == 16
    lines = out.getvalue().splitlines()
    mine = [line for line in lines if f"[{request_id}]" in line]
    # The audit line of the failed log-in and the request's access line.
    assert any("login_failed actor=nobody" in line for line in mine), lines
    assert any("kvmvdi.http" in line and f"POST /login {failed.status_code} " in line for line in mine), lines
    assert any("[lb-7f3a.1]" in line and "GET /login 200" in line for line in lines), lines
    assert "FAKE" not in out.getvalue()


async def test_the_served_dashboard_logs_json_without_library_chatter(
    run_dir: RunDir, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'vdi.sqlite3'}"
    with ServedDashboard(run_dir, tmp_path, database_url, env={"KVMVDI_LOG_FORMAT": "json"}) as served:
        served_url = served.url
        with urllib.request.urlopen(f"{served_url}/login", timeout=10) as response:  # noqa: S310
            assert response.headers["X-Request-ID"]
    entries = [json.loads(line) for line in served.output.splitlines() if line.startswith("{")]
    loggers = {entry["logger"] for entry in entries}
    assert "kvmvdi" in loggers and "uvicorn.error" in loggers, loggers
    # No access lines by default (uvicorn's or ours).
    assert not loggers & {"uvicorn.access", "kvmvdi.http"}, loggers
    # Any other line is the first-admin banner, printed to a terminal only (here there is none:
    # the password went to its 0600 file), never logged.
    others = [line for line in served.output.splitlines() if line and not line.startswith("{")]
    banner = ("=" * 64, "KVM-VDI dashboard:", "First administrator:", "Password (shown once")
    assert all(line.strip().startswith(banner) for line in others), others
