"""libvirt's event loop on asyncio, safe with blocking libvirt calls on worker threads.

Each check runs in a fresh process (libvirt takes one event implementation per
process) on an asyncio loop in debug mode, which raises on every loop call made from
a foreign thread, and talks to the real libvirtd of h0.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import libvirt

from app.hyper.eventloop import ensure_libvirt_event_loop
from tests.hyper.conftest import REPO
from tests.services.libvirt_host import LibvirtHost


def run_probe(uri: str, impl: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.hyper.eventloop_probe", uri, impl],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr
    return result


async def test_libvirt_calls_from_worker_threads_never_touch_the_loop_from_those_threads(
    h0: LibvirtHost,
) -> None:
    ours = await asyncio.to_thread(run_probe, h0.local_uri, "ours")
    assert ours["events"] == [libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED]
    assert ours["problems"] == []
    assert "Non-thread-safe" not in str(ours["stderr"])


async def test_the_check_above_catches_what_plain_libvirtaio_does_wrong(h0: LibvirtHost) -> None:
    plain = await asyncio.to_thread(run_probe, h0.local_uri, "plain")
    assert plain["problems"], "plain libvirtaio failed nowhere"
    assert "Non-thread-safe operation invoked on an event loop other than the current one" in str(
        plain["stderr"]
    )


async def test_registering_the_event_loop_twice_on_one_loop_is_harmless() -> None:
    assert ensure_libvirt_event_loop() is ensure_libvirt_event_loop()
