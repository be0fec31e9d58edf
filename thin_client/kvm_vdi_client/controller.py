"""Carries out the state machine's effects: broker calls, viewers and timers.

Broker calls run on one worker thread (sequential, so the bearer token never
races between a heartbeat and a release); viewers are watched by a thread each.
Their outcomes come back as events on a queue, and :meth:`Controller.pump`
feeds them to the machine on the caller's thread: Tk calls it from its ``after``
loop, a headless caller from its own loop. The machine is only ever touched on
that one thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kvm_vdi_client.api import (
    BrokerClient,
    BrokerError,
    BrokerUnreachable,
    InvalidCredentials,
    LeaseEnded,
    NotAuthenticated,
    Throttled,
)
from kvm_vdi_client.config import ViewerConfig
from kvm_vdi_client.events import (
    CallFailed,
    CallLogin,
    CallLogout,
    CallPower,
    CheckDesktop,
    DesktopAnswered,
    DesktopChecked,
    Effect,
    Event,
    Failure,
    FetchPools,
    HeartbeatAccepted,
    LoggedIn,
    LoginRejected,
    PoolsLoaded,
    PowerDone,
    Released,
    ReleaseLease,
    RequestDesktop,
    Schedule,
    SendHeartbeat,
    StartFailoverViewer,
    StartSpiceViewer,
    ViewerExited,
    ViewerFailed,
)
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.machine import SessionMachine
from kvm_vdi_client.model import HorizonFailover, ProtocolError
from kvm_vdi_client.viewers import (
    ViewerLaunch,
    ViewerNotInstalled,
    ViewerProcess,
    ViewerStartFailed,
    horizon_launch,
    rdp_launch,
    spice_launch,
    start_viewer,
)

log = logging.getLogger(__name__)


def classify(error: Exception) -> tuple[Failure, str]:
    """Turn an exception from a broker call into a failure kind and a message for the screen."""
    if isinstance(error, BrokerUnreachable):
        return Failure.UNREACHABLE, error.message
    if isinstance(error, NotAuthenticated):
        return Failure.SESSION_ENDED, error.message
    if isinstance(error, LeaseEnded):
        return Failure.LEASE_ENDED, error.message
    if isinstance(error, BrokerError):
        # 5xx: the dashboard could not do it now (a desktop failed to start, a directory is down): retryable.
        return (Failure.BROKEN if error.status >= 500 else Failure.REFUSED), error.message
    if isinstance(error, ProtocolError):
        return Failure.BROKEN, str(error)
    return Failure.BROKEN, _("Unexpected error in the launcher: {error}").format(error=error)


class Controller:
    def __init__(
        self,
        machine: SessionMachine,
        client: BrokerClient,
        viewer: ViewerConfig,
        *,
        viewer_env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.machine = machine
        self.client = client
        self.viewer_config = viewer
        self.viewer_env = viewer_env
        self.clock = clock
        self.viewer: ViewerProcess | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._timers: list[tuple[float, int, Event]] = []
        self._sequence = itertools.count()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker")
        self._listeners: list[Callable[[], None]] = []
        self._closed = False

    # -- driving ---------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs on the pumping thread after every handled event."""
        self._listeners.append(listener)

    def dispatch(self, event: Event) -> None:
        """Handle one event now; call only from the pumping thread (the UI's)."""
        log.debug("event %r", event)
        for effect in self.machine.handle(event):
            self._perform(effect)
        for listener in self._listeners:
            listener()

    def post(self, event: Event) -> None:
        """Queue an event from any thread."""
        self._events.put(event)

    def pump(self, timeout: float = 0.0) -> bool:
        """Handle due timers and every queued event; if none was ready, wait up to ``timeout`` for one.

        Returns whether anything was handled.
        """
        deadline = self.clock() + timeout
        handled = False
        while True:
            handled |= self._run_due_timers()
            handled |= self._drain()
            now = self.clock()
            if handled or now >= deadline:
                return handled
            try:
                event = self._events.get(timeout=max(0.0, min(deadline, self._next_due()) - now))
            except queue.Empty:
                continue
            self.dispatch(event)
            handled = True

    def _drain(self) -> bool:
        handled = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return handled
            self.dispatch(event)
            handled = True

    def _next_due(self) -> float:
        return self._timers[0][0] if self._timers else float("inf")

    def _run_due_timers(self) -> bool:
        handled = False
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, event = heapq.heappop(self._timers)
            self.dispatch(event)
            handled = True
        return handled

    def close(self) -> None:
        """Stop the viewer and end the broker session on the way out (best effort)."""
        if self._closed:
            return
        self._closed = True
        if self.viewer is not None:
            self.viewer.terminate()
        lease = self.machine.lease
        try:
            if lease is not None:
                self.client.release(lease.id)
            self.client.logout()
        except Exception as error:  # shutting down; the lease expires by itself
            log.info("could not end the broker session on exit: %s", error)
        self._worker.shutdown(wait=False, cancel_futures=True)

    # -- effects ---------------------------------------------------------------

    def _perform(self, effect: Effect) -> None:
        match effect:
            case Schedule(delay=delay, event=event):
                heapq.heappush(self._timers, (self.clock() + delay, next(self._sequence), event))
            case StartSpiceViewer(connection=connection):
                self._start_viewer(lambda: spice_launch(self.viewer_config, connection))
            case StartFailoverViewer(failover=failover, username=username, password=password):
                if isinstance(failover, HorizonFailover):
                    self._start_viewer(lambda: horizon_launch(self.viewer_config, failover, username))
                else:
                    self._start_viewer(lambda: rdp_launch(self.viewer_config, failover, username, password))
            case _:
                self._worker.submit(self._call, effect)

    def _call(self, effect: Effect) -> None:
        """On the worker thread: one broker call, its outcome posted as an event."""
        try:
            event = self._call_broker(effect)
        except (InvalidCredentials, Throttled) as error:
            event = LoginRejected(self._login_message(error))
        except Exception as error:  # every failure becomes a message on screen
            failure, message = classify(error)
            if not isinstance(error, BrokerError | ProtocolError):
                log.exception("%s failed", type(effect).__name__)  # a bug: keep the traceback in the log
            else:
                log.warning("%s failed: %s", type(effect).__name__, message)
            event = CallFailed(effect, failure, message)
        if event is not None:
            self.post(event)

    def _call_broker(self, effect: Effect) -> Event | None:
        client = self.client
        match effect:
            case CallLogin(username=username, password=password):
                try:
                    return LoggedIn(client.login(username, password))
                except BrokerError as error:
                    if isinstance(error, InvalidCredentials | Throttled) or not 400 <= error.status < 500:
                        raise
                    return LoginRejected(error.message)  # e.g. an account that is disabled
            case CallLogout():
                try:
                    client.logout()
                except BrokerError as error:
                    log.info("logout not confirmed by the dashboard: %s", error.message)
                return None
            case FetchPools():
                return PoolsLoaded(client.pools())
            case RequestDesktop(pool_id=pool_id):
                return DesktopAnswered(client.request_desktop(pool_id))
            case CheckDesktop(pool_id=pool_id):
                pool = next((pool for pool in client.pools() if pool.id == pool_id), None)
                return DesktopChecked(pool_id, pool.desktop if pool is not None else None)
            case SendHeartbeat(lease_id=lease_id):
                client.heartbeat(lease_id)
                return HeartbeatAccepted(lease_id)
            case ReleaseLease(lease_id=lease_id):
                client.release(lease_id)
                return Released(lease_id)
            case CallPower(vm_id=vm_id, action=action):
                return PowerDone(vm_id, action, client.power(vm_id, action))
        raise TypeError(f"not a broker call: {effect!r}")

    @staticmethod
    def _login_message(error: BrokerError) -> str:
        if isinstance(error, Throttled):
            if error.retry_after:
                return _("Too many failed log-ins. Wait {seconds:.0f} s and try again.").format(
                    seconds=error.retry_after
                )
            return _("Too many failed log-ins. Wait a while and try again.")
        return _("Wrong user name or password.")

    def _start_viewer(self, build: Callable[[], ViewerLaunch]) -> None:
        try:
            process = start_viewer(build(), env=self.viewer_env)
        except (ViewerNotInstalled, ViewerStartFailed) as error:
            log.error("%s", error)
            self.post(ViewerFailed(str(error)))
            return
        except ValueError as error:  # a connection field the .vv format cannot carry
            log.error("cannot build the viewer's connection: %s", error)
            self.post(
                ViewerFailed(
                    _("The dashboard sent connection details the viewer cannot use: {error}").format(
                        error=error
                    )
                )
            )
            return
        self.viewer = process
        threading.Thread(target=self._watch, args=(process,), name="viewer-watch", daemon=True).start()

    def _watch(self, process: ViewerProcess) -> None:
        code = process.wait()
        log.info("%s exited with status %s", process.launch.label, code)
        self.post(ViewerExited(code))
