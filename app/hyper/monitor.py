"""Keeping one hypervisor connected: connect, watch, reconnect with backoff, fence.

The monitor owns the hypervisor's connection. It watches it three ways: libvirt's
close callback (EOF, error, keepalive timeout), the asyncssh connection's
``connection_lost``, and a periodic cheap libvirt round trip with a timeout. When
the connection is lost it reconnects at once, then with exponential backoff
(1 s doubling to 30 s). A hypervisor that cannot be reached again within
``fence_after`` seconds is reported down (and, at start, at the first failed
attempt); it is reported up as soon as a connection succeeds.

Domain events from libvirt are queued and handled in order on one task, so that
listeners see a domain's changes in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import libvirt

from app.hyper.disks import DiskOperations
from app.hyper.domains import domain_state_by_uuid
from app.hyper.errors import HypervisorError
from app.hyper.events import IMPLIED_STATE, DomainEvent, describe_lifecycle
from app.hyper.hypervisor import Hypervisor
from app.hyper.session import ConnectFailure, Session, open_session
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import DashboardKey, KnownHostsFile
from app.i18n.messages import M_, Message
from app.settings import HypervisorSettings
from app.tlsca import CertificateState

log = logging.getLogger("kvmvdi.hyper.monitor")

# (hypervisor, state, note on it (kept to be shown in each reader's language), reason code)
StateReport = Callable[[Hypervisor, str, str | Message, str], Awaitable[None]]
FactsReport = Callable[[Hypervisor], Awaitable[None]]
EventSink = Callable[[DomainEvent], Awaitable[None]]

# Raw libvirt events waiting for delivery; far more than a burst of desktop starts.
_EVENT_BACKLOG = 10_000


class HypervisorMonitor:
    def __init__(
        self,
        hypervisor: Hypervisor,
        *,
        key: DashboardKey,
        known_hosts: KnownHostsFile,
        spice_tls: SpiceTls,
        settings: HypervisorSettings,
        report_state: StateReport,
        report_facts: FactsReport,
        deliver: EventSink,
    ) -> None:
        self.hv = hypervisor
        self._key = key
        self._known_hosts = known_hosts
        self._spice_tls = spice_tls
        self._settings = settings
        self._report_state = report_state
        self._report_facts = report_facts
        self._deliver = deliver
        self._task: asyncio.Task[None] | None = None
        # Lost sessions being torn down; a dead peer can make that slow, and it must
        # not delay reconnecting (or fencing).
        self._closing: set[asyncio.Task[None]] = set()
        # Set after the first connection attempt, whatever its outcome.
        self.first_attempt = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"hypervisor-monitor-{self.hv.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        session = self.hv.detach()
        if session is not None:
            await session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self._settings
        backoff = settings.reconnect_initial
        lost_since: float | None = None
        lost_reason = ""
        ever_connected = False
        while True:
            blocked = self.hv.record.not_connectable_reason()
            if blocked:
                # Waits for an admin (reload starts a new monitor).
                code = "host_key_unconfirmed" if "host key" in blocked.msgid else "misconfigured"
                await self._report_state(self.hv, "unknown", blocked, code)
                self.first_attempt.set()
                return
            events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(_EVENT_BACKLOG)
            try:
                session = await self._attempt(events, lost_since, lost_reason)
            except ConnectFailure as failure:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                if not ever_connected or now - lost_since >= settings.fence_after:
                    await self._report_state(self.hv, "down", failure.note, failure.code)
                self.first_attempt.set()
                delay = backoff
                if self.hv.state != "down":
                    # Wake up in time to fence at fence_after, not a backoff step later.
                    delay = min(delay, max(0.2, lost_since + settings.fence_after - now))
                log.info("%s: connection failed (%s); retrying in %.1f s", self.hv.name, failure.code, delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, settings.reconnect_max)
                continue
            ever_connected = True
            backoff = settings.reconnect_initial
            lost_since = None
            lost_reason = await self._serve(session, events)
            lost_since = time.monotonic()
            log.warning("%s: connection lost: %s", self.hv.name, lost_reason)

    async def _attempt(
        self, events: asyncio.Queue[tuple[Any, ...]], lost_since: float | None, lost_reason: str
    ) -> Session:
        """One connection attempt; fences at ``fence_after`` even while the attempt still hangs."""
        attempt = asyncio.ensure_future(self._connect_and_prepare(events))
        try:
            if lost_since is not None and self.hv.state != "down":
                remaining = lost_since + self._settings.fence_after - time.monotonic()
                done, _pending = await asyncio.wait({attempt}, timeout=max(0.0, remaining))
                if not done:
                    # An attempt that is about to fail on its own reports a better reason.
                    done, _pending = await asyncio.wait({attempt}, timeout=1.0)
                if not done:
                    note = M_(
                        "no answer for {after:g} s ({reason}); reconnecting",
                        after=float(self._settings.fence_after),
                        reason=lost_reason,
                    )
                    await self._report_state(self.hv, "down", note, "timeout")
            return await attempt
        except asyncio.CancelledError:
            attempt.cancel()
            raise

    async def _connect_and_prepare(self, events: asyncio.Queue[tuple[Any, ...]]) -> Session:
        session = await self._connect()
        await self._prepare(session, events)
        return session

    async def _connect(self) -> Session:
        settings = self._settings
        try:
            return await open_session(
                self.hv.record,
                self._key,
                self._known_hosts,
                connect_timeout=settings.connect_timeout,
                keepalive=(settings.keepalive_interval, settings.keepalive_count),
                threads=settings.libvirt_threads,
            )
        except ConnectFailure:
            raise
        except Exception as exc:
            log.exception("%s: unexpected error while connecting", self.hv.name)
            raise ConnectFailure(
                "unreachable", M_("unexpected error while connecting: {exc}", exc=str(exc))
            ) from exc

    async def _prepare(self, session: Session, events: asyncio.Queue[tuple[Any, ...]]) -> None:
        """Keepalive, close and event callbacks, host facts; closes the session on failure."""
        try:
            await session.libvirt.watch(
                keepalive=(self._settings.keepalive_interval, self._settings.keepalive_count),
                on_lifecycle=self._lifecycle_callback(events),
                on_reboot=self._reboot_callback(events),
            )
            await self._refresh_facts(session)
            # Before "up": a desktop started on a newly added hypervisor finds its certificate.
            await self._ensure_certificate(session)
        except BaseException as exc:
            await session.close()
            if isinstance(exc, HypervisorError | libvirt.libvirtError):
                note = M_("connected, but libvirt set-up failed: {exc}", exc=str(exc))
                raise ConnectFailure("libvirt_unavailable", note) from exc
            raise

    async def _serve(self, session: Session, events: asyncio.Queue[tuple[Any, ...]]) -> str:
        """Use ``session`` until it is lost; returns why."""
        consumer = asyncio.create_task(self._consume(session, events), name=f"hypervisor-events-{self.hv.id}")
        lost = False
        try:
            self.hv.attach(session)
            await self._report_state(self.hv, "up", "", "")
            self.first_attempt.set()
            reason = await self._watch(session)
            lost = True
            return reason
        finally:
            self.hv.detach()
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            closing = asyncio.create_task(session.close(lost=lost), name=f"hypervisor-close-{self.hv.id}")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _watch(self, session: Session) -> str:
        settings = self._settings
        lost = asyncio.create_task(session.wait_lost())
        next_facts = time.monotonic() + settings.facts_interval
        try:
            while True:
                done, _pending = await asyncio.wait({lost}, timeout=settings.health_interval)
                if done:
                    return lost.result()
                try:
                    await session.libvirt.ping(settings.health_timeout)
                except TimeoutError:
                    return f"no answer from libvirt within {settings.health_timeout:g} s"
                except (libvirt.libvirtError, HypervisorError) as exc:
                    return f"health check failed: {exc}"
                if time.monotonic() >= next_facts:
                    next_facts = time.monotonic() + settings.facts_interval
                    with contextlib.suppress(HypervisorError):
                        await self._refresh_facts(session)
                        await self._report_facts(self.hv)
                    certificate = self.hv.spice_certificate
                    if certificate is None or certificate.due():
                        await self._ensure_certificate(session)
        finally:
            lost.cancel()

    async def _ensure_certificate(self, session: Session) -> None:
        """The SPICE certificate issued when missing, foreign or due; a failure is a warning, not a
        fence (desktops then cannot start with TLS until an admin fixes the hypervisor)."""
        if not self._spice_tls.applies_to(self.hv.record):
            return
        try:
            self.hv.spice_certificate = await self._spice_tls.ensure(session.runner, self.hv.record)
        except (HypervisorError, ValueError) as exc:
            log.warning("%s: SPICE certificate not installed: %s", self.hv.name, exc)
            self.hv.spice_certificate = CertificateState(False, f"could not be installed: {exc}")
            return
        if not self.hv.spice_certificate.valid:
            log.warning("%s: SPICE certificate: %s", self.hv.name, self.hv.spice_certificate.reason)

    async def _refresh_facts(self, session: Session) -> None:
        self.hv.facts = await session.facts()
        disks = DiskOperations(session.runner, self.hv.record.dirs)
        try:
            self.hv.images_free_bytes = await disks.free_bytes(self.hv.record.images_dir)
        except HypervisorError as exc:
            log.warning("%s: free space of %s unknown: %s", self.hv.name, self.hv.record.images_dir, exc)
            self.hv.images_free_bytes = None

    # -- domain events ------------------------------------------------------------------

    @staticmethod
    def _lifecycle_callback(events: asyncio.Queue[tuple[Any, ...]]) -> Callable[..., None]:
        loop = asyncio.get_running_loop()

        def on_lifecycle(_conn: Any, domain: Any, event: int, detail: int, _opaque: Any) -> None:
            # name() and UUIDString() are local to the event's domain object: no RPC here.
            item = ("lifecycle", domain.name(), domain.UUIDString(), event, detail)
            loop.call_soon_threadsafe(_offer, events, item)

        return on_lifecycle

    @staticmethod
    def _reboot_callback(events: asyncio.Queue[tuple[Any, ...]]) -> Callable[..., None]:
        loop = asyncio.get_running_loop()

        def on_reboot(_conn: Any, domain: Any, _opaque: Any) -> None:
            loop.call_soon_threadsafe(_offer, events, ("reboot", domain.name(), domain.UUIDString(), 0, 0))

        return on_reboot

    async def _consume(self, session: Session, events: asyncio.Queue[tuple[Any, ...]]) -> None:
        while True:
            kind, name, uuid, event, detail = await events.get()
            if kind == "reboot":
                domain_event = DomainEvent(self.hv.id, name, uuid, "running", "rebooted", "rebooted")
            else:
                event_name, detail_name = describe_lifecycle(event, detail)
                state = IMPLIED_STATE.get(event_name)
                if state is None:
                    try:
                        state = await session.libvirt.call(domain_state_by_uuid, uuid) or "undefined"
                    except HypervisorError:
                        state = "unknown"
                domain_event = DomainEvent(self.hv.id, name, uuid, state, detail_name, event_name)
            await self._deliver(domain_event)


def _offer(events: asyncio.Queue[tuple[Any, ...]], item: tuple[Any, ...]) -> None:
    try:
        events.put_nowait(item)
    except asyncio.QueueFull:
        log.error("domain event backlog full; dropped %s event of %s", item[0], item[1])
