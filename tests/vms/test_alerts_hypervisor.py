"""A hypervisor that dies is announced by e-mail (a real SMTP server) and by signed webhook, and so
is its return: h1, in a network namespace of its own, managed over SSH, loses its sshd and every
session, is fenced, and comes back when sshd does."""

from __future__ import annotations

import asyncio

import pytest

from tests.services.libvirt_host import LibvirtHost
from tests.services.smtp import SmtpServer
from tests.test_alerts import alert_settings, eventually, mails_to
from tests.vms.world import WorldFactory
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.kvm


async def test_a_killed_hypervisor_is_mailed_and_posted_and_so_is_its_return(
    world_factory: WorldFactory,
    second_hypervisor: LibvirtHost,
    smtp_server: SmtpServer,
    receiver: WebhookReceiver,
) -> None:
    world = await world_factory(
        [second_hypervisor],
        hypervisors={"fence_after": 2},
        alerts=alert_settings(smtp_server, receiver),
    )
    running = world.dashboard
    await asyncio.to_thread(second_hypervisor.stop_sshd)
    try:
        down = await eventually(lambda: mails_to(smtp_server, running), "the down e-mail", timeout=90)
    finally:
        await asyncio.to_thread(second_hypervisor.start_sshd)
    assert down[0]["Subject"] == "[KVM-VDI] Hypervisor h0 is down"
    assert "fenced" in down[0].get_content()
    both = await eventually(
        lambda: mails if len(mails := mails_to(smtp_server, running)) == 2 else None,
        "the return e-mail",
        timeout=90,
    )
    assert both[1]["Subject"] == "[KVM-VDI] Hypervisor h0 is back up"
    posted = await eventually(lambda: got if len(got := receiver.received) == 2 else None, "both webhooks")
    assert [(p.body["kind"], p.body["subject"], p.signature_ok) for p in posted] == [
        ("hypervisor_down", "h0", True),
        ("hypervisor_up", "h0", True),
    ]
