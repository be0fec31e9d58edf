"""Run libvirt from worker threads on an asyncio loop in debug mode, which raises on any
loop call made from another thread. Usage: python -m tests.hyper.eventloop_probe URI IMPL
(IMPL: "ours" = app.hyper.eventloop, "plain" = libvirtaio as shipped). Prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys

import libvirt
import libvirtaio

from app.hyper.eventloop import LibvirtEventLoop
from tests.waiting import eventually

XML = (
    "<domain type='qemu'><name>eventloop-probe</name><memory unit='MiB'>16</memory>"
    "<os><type arch='x86_64'>hvm</type></os></domain>"
)


async def main(uri: str, impl: str) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    loop.set_exception_handler(
        lambda _loop, context: problems.append(str(context.get("exception") or context))
    )
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if impl == "ours":
        LibvirtEventLoop(loop).register()
    else:
        libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
    events: list[int] = []
    try:
        conn = await asyncio.to_thread(libvirt.open, uri)
        await asyncio.to_thread(conn.setKeepAlive, 2, 3)
        callback = await asyncio.to_thread(
            conn.domainEventRegisterAny,
            None,
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, _d, event, _detail, _o: events.append(event),
            None,
        )
        for _ in range(20):
            await asyncio.to_thread(conn.getLibVersion)
        domain = await asyncio.to_thread(conn.defineXML, XML)
        await asyncio.to_thread(domain.undefine)
        del domain
        await eventually(lambda: len(events) >= 2, "the define and undefine events", timeout=10)
        await asyncio.to_thread(conn.domainEventDeregisterAny, callback)
        await asyncio.to_thread(conn.close)
    except Exception as exc:
        problems.append(repr(exc))
    # What does not happen is seen over time: a late callback of the closed connection
    # would report its exception to the loop within this while.
    await asyncio.sleep(0.2)
    return {"events": events, "problems": problems}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]), debug=True)))
