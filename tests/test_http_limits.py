"""Limits every request meets, on ``kvm-vdi serve`` as an admin runs it.

Huge bodies (with a length or chunked), bodies and heads trickled a byte at a
time, and more connections than allowed: each is refused quickly, and the
dashboard's memory does not grow with what the clients tried to send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import raw_http
from tests.served import ServedDashboard
from tests.services.rundir import RunDir
from tests.waiting import eventually

LIMITS = {
    "KVMVDI_SERVER__MAX_BODY_BYTES": str(1024 * 1024),
    "KVMVDI_SERVER__BODY_TIMEOUT": "2",
    "KVMVDI_SERVER__HEADER_TIMEOUT": "2",
    "KVMVDI_SERVER__KEEPALIVE_TIMEOUT": "60",
    "KVMVDI_SERVER__MAX_CONNECTIONS": "64",
}
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def served(run_dir: RunDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDashboard]:
    workdir = tmp_path_factory.mktemp("limits")
    with ServedDashboard(run_dir, workdir, f"sqlite:///{workdir / 'vdi.sqlite3'}", env=LIMITS) as served:
        yield served


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the last reset) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def reset_peak(pid: int) -> None:
    # "5" resets the peak resident set size (VmHWM) to the current one (proc(5)).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def huge(port: int, path: str, content_type: str, *, chunked: bool) -> raw_http.RawAnswer:
    """A 64 MiB body, sent as fast as the server takes it."""
    length = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(64 * MIB))
    request_head = raw_http.head("POST", path, [("Content-Type", content_type), ("Accept", JSON), length])
    body = raw_http.repeat(b"a" * (256 * 1024), 256)
    return await raw_http.request(port, request_head, body, chunked=chunked)


async def slow_body(port: int, path: str) -> raw_http.RawAnswer:
    """A declared 100 KB body, one byte every 0.1 s."""
    request_head = raw_http.head(
        "POST", path, [("Content-Type", JSON), ("Accept", JSON), ("Content-Length", "100000")]
    )
    return await raw_http.request(port, request_head, raw_http.repeat(b" ", 100_000, pause=0.1), timeout=30)


async def slow_head(port: int) -> raw_http.RawAnswer:
    """A request head trickled a byte every 0.1 s, never finished."""

    async def trickle() -> AsyncIterator[bytes]:
        async for byte in raw_http.repeat(b"X", 10_000, pause=0.1):
            yield byte

    started = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    return await raw_http.request(port, started, trickle(), timeout=30)


async def test_huge_and_slow_requests_are_refused_without_growing_the_process(
    served: ServedDashboard,
) -> None:
    port = served.port
    # Warm up what a first request loads (templates, JSON errors) before measuring.
    for _ in range(3):
        await huge(port, "/api/v1/login", JSON, chunked=False)
    before = memory_kib(served.pid)
    reset_peak(served.pid)
    attempts = [
        *(huge(port, "/api/v1/login", JSON, chunked=chunked) for chunked in (False, True) for _ in range(6)),
        *(huge(port, "/login", FORM, chunked=chunked) for chunked in (False, True) for _ in range(3)),
        *(huge(port, "/client/login", FORM, chunked=True) for _ in range(3)),
        *(slow_body(port, "/api/v1/login") for _ in range(6)),
        *(slow_head(port) for _ in range(6)),
    ]
    answers = await asyncio.gather(*attempts)
    after = memory_kib(served.pid)
    statuses = [answer.status for answer in answers]
    assert statuses == [413] * 21 + [408] * 12, statuses
    assert all(answer.closed for answer in answers)
    assert json.loads(answers[0].body)["error"] == "body_too_large"
    assert json.loads(answers[21].body)["error"] == "body_timeout"
    # 21 clients offered 64 MiB each: the dashboard's peak grew by a few MiB at most.
    grown_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    assert grown_mib < 24, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert sum(answer.sent for answer in answers[:21]) < 21 * 64 * MIB


async def test_connections_beyond_the_limit_get_503_until_one_closes(served: ServedDashboard) -> None:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # Kept-alive connections count until they close (the keep-alive timeout is 60 s here).
        for _ in range(64):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(raw_http.head("GET", "/login"))
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            held.append((reader, writer))
        refused = await raw_http.request(served.port, raw_http.head("GET", "/login"))
        assert refused.status == 503
    finally:
        for _, writer in held:
            writer.close()
    closing = raw_http.head("GET", "/login", [("Connection", "close")])

    async def served_again() -> bool:
        return (await raw_http.request(served.port, closing)).status == 200

    await eventually(served_again, "a 200 once the held connections closed")


async def test_a_client_leaving_in_the_middle_of_its_body_is_one_log_line(served: ServedDashboard) -> None:
    before = len(served.output)
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(raw_http.head("POST", "/api/v1/login", [("Content-Type", JSON), ("Content-Length", "1000")]))
    writer.write(b'{"username": "ad')
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    line = "client left during its request body: POST /api/v1/login"

    def logged_since() -> str:
        new = served.output[before:]
        return new if line in new else ""

    logged = await eventually(logged_since, f"the log says {line!r}")
    assert "Traceback" not in logged and "Exception in ASGI application" not in logged
