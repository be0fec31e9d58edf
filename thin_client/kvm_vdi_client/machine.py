"""The launcher's session state machine: pure, no I/O, no clock.

``LoggedOut → LoggingIn → ChoosingPool → Requesting → Booting → Viewing →
Reconnecting → Releasing → LoggedOut``, plus ``Failover`` (an RDP/Horizon viewer runs
instead) and ``Error`` (a readable message and, where it makes sense, a retry).

When the viewer exits, the launcher first asks the dashboard whether the desktop is
still the user's and running. If it is, the viewer lost its connection (a dashboard
replica stopped, the network went away): the launcher connects again, through
whichever replica answers (on a kiosk at once, a few times in a row; otherwise it
asks the user). If the desktop stopped or the session ended, the lease is released.

Right after log-in the pool list may be skipped: a kiosk's configured pool, or the
pool the dashboard names (``straight_to``: the user may use only that pool, or holds
one desktop, and the pool says so) is requested at once. While a desktop is being
requested, the user can still go to the pool list (:class:`ChoosePoolRequested`).

:meth:`SessionMachine.handle` takes an event and returns the effects to carry
out; the UI renders the machine's public attributes. Events that do not fit
the current phase (a late answer after the user moved on, an old timer) are
ignored, so a slow dashboard can never drive the session backwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kvm_vdi_client.config import BootingConfig, KioskConfig
from kvm_vdi_client.events import (
    BootRetryDue,
    CallFailed,
    CallLogin,
    CallLogout,
    CallPower,
    CheckDesktop,
    CheckDue,
    ChoosePoolRequested,
    DesktopAnswered,
    DesktopChecked,
    Dismissed,
    Effect,
    Event,
    Failure,
    FetchPools,
    HeartbeatAccepted,
    HeartbeatDue,
    LoggedIn,
    LoginRejected,
    LoginSubmitted,
    LogoutRequested,
    Phase,
    PoolChosen,
    PoolsLoaded,
    PowerDone,
    PowerRequested,
    RefreshRequested,
    Released,
    ReleaseLease,
    RequestDesktop,
    RetryRequested,
    Schedule,
    SendHeartbeat,
    Started,
    StartFailoverViewer,
    StartSpiceViewer,
    ViewerExited,
    ViewerFailed,
)
from kvm_vdi_client.i18n import N_, ngettext, state_label
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.model import (
    Desktop,
    DesktopBooting,
    DesktopReady,
    DesktopRefused,
    Failover,
    FailoverOffered,
    Lease,
    Pool,
    RdpFailover,
    User,
)
from kvm_vdi_client.rdp import exit_reason

log = logging.getLogger(__name__)

# Translated where shown: the language is chosen after this module is imported.
POWER_ACTIONS = {
    "shutdown": N_("Shut down"),
    "poweroff": N_("Force off"),
    "reboot": N_("Restart"),
    "start": N_("Start"),
}
# While the dashboard is unreachable during a session, heartbeats are retried at least this often.
HEARTBEAT_RETRY = 10.0
# A viewer that lost its connection is started again this many times in a row (a heartbeat
# accepted in between starts the count again); then the user decides.
MAX_RECONNECTS = 3
# The dashboard may be restarting when the viewer exits: ask again this often, this many times.
CHECK_RETRY = 2.0
CHECK_ATTEMPTS = 8
# States in which a desktop has a screen to reconnect to.
SHOWING_STATES = frozenset({"running", "paused"})


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass
class SessionMachine:
    booting: BootingConfig = field(default_factory=BootingConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)
    auto_login: Credentials | None = None
    # Reconnect by itself when the viewer lost its desktop (kiosks); else ask the user first.
    reconnect: bool = True

    phase: Phase = Phase.LOGGED_OUT
    user: User | None = None
    pools: tuple[Pool, ...] | None = None
    # One-line feedback on the current screen: "Wrong user name or password.", "No free desktop ...".
    notice: str | None = None
    error: str | None = None
    can_retry: bool = False
    progress: float | None = None
    status: str = ""
    desktop: Desktop | None = None
    lease: Lease | None = None
    failover: Failover | None = None
    heartbeat_failures: int = 0

    _credentials: Credentials | None = field(default=None, repr=False)
    _pool_id: int | None = None
    _boot_attempts: int = 0
    _boot_waited: float = 0.0
    _auto_select: bool = False
    _straight: bool = False
    _retry: Effect | None = field(default=None, repr=False)
    _retry_phase: Phase = Phase.LOGGED_OUT
    _dismiss_ends_session: bool = False
    _dismiss_releases: bool = False
    _pending_error: str | None = None
    _reconnects: int = 0
    _check_attempts: int = 0

    # -- entry point ------------------------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        before = self.phase
        effects = self._dispatch(event)
        if self.phase is not before:
            log.info("session: %s -> %s", before, self.phase)
        return effects

    def _dispatch(self, event: Event) -> list[Effect]:
        match event:
            case Started():
                return self._start()
            case LoginSubmitted(username=username, password=password) if self.phase is Phase.LOGGED_OUT:
                return self._login(Credentials(username.strip(), password))
            case LoggedIn(user=user) if self.phase is Phase.LOGGING_IN:
                self.user = user
                self._auto_select = self.kiosk.pool is not None
                self._straight = not self._auto_select
                return self._enter_pools(notice=None)
            case LoginRejected(message=message) if self.phase is Phase.LOGGING_IN:
                self._credentials = None
                self._to(Phase.LOGGED_OUT, notice=message)
                return []
            case PoolsLoaded(pools=pools) if self.phase is Phase.CHOOSING_POOL:
                return self._pools_loaded(pools)
            case RefreshRequested() if self.phase is Phase.CHOOSING_POOL:
                return [FetchPools()]
            case PoolChosen(pool_id=pool_id) if self.phase is Phase.CHOOSING_POOL:
                return self._request(pool_id)
            case ChoosePoolRequested() if self.can_choose_pool:
                # A late answer to the request is ignored (the phase moved on); a desktop it handed
                # out shows in the list as the user's, and its lease lapses if nobody connects.
                return self._enter_pools(notice=None)
            case DesktopAnswered(answer=answer) if self.phase in (Phase.REQUESTING, Phase.BOOTING):
                return self._answered(answer)
            case BootRetryDue(pool_id=pool_id, attempt=attempt) if (
                self.phase is Phase.BOOTING and attempt == self._boot_attempts and pool_id == self._pool_id
            ):
                return [RequestDesktop(pool_id)]
            case HeartbeatDue(lease_id=lease_id) if self._viewing(lease_id):
                return [SendHeartbeat(lease_id)]
            case HeartbeatAccepted(lease_id=lease_id) if self._viewing(lease_id):
                self.heartbeat_failures = 0
                self._reconnects = 0
                self.notice = None
                assert self.lease is not None
                return [Schedule(self.lease.heartbeat_interval, HeartbeatDue(lease_id))]
            case ViewerExited() if self.phase is Phase.VIEWING:
                return self._check_desktop()
            case DesktopChecked(pool_id=pool_id, desktop=desktop) if (
                self.phase is Phase.RECONNECTING and pool_id == self._pool_id
            ):
                return self._checked(desktop)
            case CheckDue(attempt=attempt) if (
                self.phase is Phase.RECONNECTING and attempt == self._check_attempts
            ):
                assert self._pool_id is not None
                return [CheckDesktop(self._pool_id)]
            case ViewerFailed(message=message) if self.phase is Phase.VIEWING:
                self._pending_error = message
                return self._release()
            case ViewerExited(returncode=returncode) if self.phase is Phase.FAILOVER:
                return self._failover_ended(returncode)
            case ViewerFailed(message=message) if self.phase is Phase.FAILOVER:
                self._error(message, retry=None, dismiss_ends_session=False)
                return []
            case Released(lease_id=lease_id) if self.phase is Phase.RELEASING and self._is_lease(lease_id):
                return self._released()
            case PowerRequested(vm_id=vm_id, action=action) if self.phase is Phase.CHOOSING_POOL:
                return self._power(vm_id, action)
            case PowerDone(vm_id=vm_id, action=action, state=state) if self.phase is Phase.CHOOSING_POOL:
                name = self._desktop_name(vm_id)
                self.notice = _("{action} sent to {name} (now {state}).").format(
                    action=_(POWER_ACTIONS.get(action, action)), name=name, state=state or _("changing")
                )
                return [FetchPools()]
            case LogoutRequested() if self.phase in (Phase.CHOOSING_POOL, Phase.ERROR, Phase.LOGGED_OUT):
                return self._finish_session(notice=_("You have logged out."), restart=False)
            case RetryRequested() if self.phase is Phase.ERROR:
                return self._retry_failed()
            case Dismissed() if self.phase is Phase.ERROR:
                return self._dismiss()
            case CallFailed() as failed:
                return self._call_failed(failed)
        log.debug("session: ignoring %s in phase %s", type(event).__name__, self.phase)
        return []

    # -- transitions ------------------------------------------------------------

    def _to(self, phase: Phase, *, notice: str | None = None, status: str = "") -> None:
        self.phase = phase
        self.notice = notice
        self.status = status
        self.progress = None
        if phase is not Phase.ERROR:
            self.error = None
            self.can_retry = False
            self._retry = None
            self._dismiss_releases = False

    def _start(self) -> list[Effect]:
        if self.phase not in (Phase.LOGGED_OUT, Phase.ERROR) or self.user is not None:
            return []
        if self.auto_login is not None:
            return self._login(self.auto_login)
        self._to(Phase.LOGGED_OUT)
        return []

    def _login(self, credentials: Credentials) -> list[Effect]:
        if not credentials.username or not credentials.password:
            self.notice = _("Enter your user name and password.")
            return []
        self._credentials = credentials
        self._to(
            Phase.LOGGING_IN, status=_("Logging in as {username}…").format(username=credentials.username)
        )
        return [CallLogin(credentials.username, credentials.password)]

    def _enter_pools(self, notice: str | None) -> list[Effect]:
        self._to(Phase.CHOOSING_POOL, notice=notice)
        self.desktop = None
        self.failover = None
        return [FetchPools()]

    @property
    def can_choose_pool(self) -> bool:
        """A desktop is being requested: the pool list is one action away."""
        return self.phase in (Phase.REQUESTING, Phase.BOOTING)

    def _pools_loaded(self, pools: tuple[Pool, ...]) -> list[Effect]:
        self.pools = pools
        straight, self._straight = self._straight, False
        if not pools:
            self.notice = _(
                "No desktop pools are available to you. Ask your administrator for access to a pool."
            )
            return []
        if self._auto_select:
            self._auto_select = False
            wanted = self.kiosk.pool
            match = next((pool for pool in pools if wanted in (pool.name, str(pool.id))), None)
            if match is None:
                self.notice = _(
                    "The pool {wanted!r} configured for this thin client is not available to you."
                ).format(wanted=wanted)
                return []
            return self._request(match.id)
        target = next((pool for pool in pools if pool.straight), None) if straight else None
        if target is not None:
            effects = self._request(target.id)
            name = (
                _("your desktop “{name}”").format(name=target.desktop.name)
                if target.desktop
                else _("your desktop")
            )
            self.status = _("Opening {name} in “{pool}”…").format(name=name, pool=target.name)
            return effects
        return []

    def _pool_name(self, pool_id: int | None) -> str:
        pool = next((pool for pool in self.pools or () if pool.id == pool_id), None)
        return f"“{pool.name}”" if pool else _("the pool")

    def _desktop_name(self, vm_id: int) -> str:
        for pool in self.pools or ():
            if pool.desktop is not None and pool.desktop.vm_id == vm_id:
                return f"“{pool.desktop.name}”"
        return _("your desktop")

    def _request(self, pool_id: int) -> list[Effect]:
        self._pool_id = pool_id
        self._boot_attempts = 0
        self._boot_waited = 0.0
        self._to(
            Phase.REQUESTING,
            status=_("Requesting a desktop from {pool_name}…").format(pool_name=self._pool_name(pool_id)),
        )
        return [RequestDesktop(pool_id)]

    def _answered(self, answer: object) -> list[Effect]:
        match answer:
            case DesktopReady(lease=lease, desktop=desktop, connection=connection):
                self.lease = lease
                self.desktop = desktop
                self.heartbeat_failures = 0
                self._to(
                    Phase.VIEWING,
                    status=_("Connected to {name}. Close the viewer to end the session.").format(
                        name=desktop.name
                    ),
                )
                return [
                    StartSpiceViewer(connection),
                    Schedule(lease.heartbeat_interval, HeartbeatDue(lease.id)),
                ]
            case DesktopBooting(retry_after=retry_after, desktop=desktop):
                return self._booting(retry_after, desktop)
            case FailoverOffered(failover=failover, reason=reason):
                return self._start_failover(failover, reason)
            case DesktopRefused(message=message):
                return self._enter_pools(notice=message)
        raise TypeError(f"unknown desktop answer {answer!r}")

    def _booting(self, retry_after: float | None, desktop: Desktop | None) -> list[Effect]:
        bounds = self.booting
        delay = min(
            max(retry_after if retry_after is not None else bounds.default_retry, bounds.min_retry),
            bounds.max_retry,
        )
        self._boot_attempts += 1
        if desktop is not None:
            self.desktop = desktop
        name = (
            _("your desktop “{name}”").format(name=self.desktop.name) if self.desktop else _("your desktop")
        )
        if self._boot_attempts > bounds.max_attempts or self._boot_waited + delay > bounds.max_wait:
            assert self._pool_id is not None
            self._error(
                (
                    _(
                        "Your desktop “{name}” did not finish starting within {seconds:.0f} s "
                        "({checks} checks). Try again, or ask your administrator to check it."
                    )
                    if self.desktop
                    else _(
                        "Your desktop did not finish starting within {seconds:.0f} s ({checks} checks). "
                        "Try again, or ask your administrator to check it."
                    )
                ).format(
                    name=self.desktop.name if self.desktop else "",
                    seconds=self._boot_waited,
                    checks=self._boot_attempts - 1,
                ),
                retry=RequestDesktop(self._pool_id),
                retry_phase=Phase.REQUESTING,
            )
            return []
        self._boot_waited += delay
        state = f" ({state_label(self.desktop.state)})" if self.desktop else ""
        self._to(Phase.BOOTING, status=_("Starting {name}{state}…").format(name=name, state=state))
        self.progress = min(self._boot_waited / bounds.max_wait, 1.0)
        assert self._pool_id is not None
        return [Schedule(delay, BootRetryDue(self._pool_id, self._boot_attempts))]

    def _start_failover(self, failover: Failover, reason: str | None) -> list[Effect]:
        credentials = self._credentials
        if credentials is None:
            self._error(_("Log in again to use the fallback desktop."), retry=None, dismiss_ends_session=True)
            return []
        self.failover = failover
        target = (
            _("the fallback RDP server {host}").format(host=failover.host)
            if isinstance(failover, RdpFailover)
            else _("the Horizon server {server}").format(server=failover.server)
        )
        self._to(Phase.FAILOVER, notice=reason, status=_("Connecting to {target}…").format(target=target))
        return [StartFailoverViewer(failover, credentials.username, credentials.password)]

    def _failover_ended(self, returncode: int) -> list[Effect]:
        failover = self.failover
        reason = exit_reason(returncode) if isinstance(failover, RdpFailover) else None
        if reason is None or failover is None or self._credentials is None:
            return self._finish_session(notice=_("Your session has ended."))
        assert isinstance(failover, RdpFailover)
        credentials = self._credentials
        self._error(
            _("The RDP viewer closed: {reason}.").format(
                reason=_(reason).format(host=failover.host, status=returncode)
            ),
            retry=StartFailoverViewer(failover, credentials.username, credentials.password),
            retry_phase=Phase.FAILOVER,
            dismiss_ends_session=True,
        )
        return []

    def _viewing(self, lease_id: str) -> bool:
        return self.phase is Phase.VIEWING and self._is_lease(lease_id)

    def _is_lease(self, lease_id: str) -> bool:
        return self.lease is not None and self.lease.id == lease_id

    def _release(self) -> list[Effect]:
        assert self.lease is not None
        self._to(Phase.RELEASING, status=_("Ending the session…"))
        return [ReleaseLease(self.lease.id)]

    def _check_desktop(self) -> list[Effect]:
        if self._pool_id is None:
            return self._release()
        self._check_attempts = 0
        self._to(
            Phase.RECONNECTING,
            status=_("The viewer closed; checking {desktop}…").format(desktop=self._desktop_label()),
        )
        return [CheckDesktop(self._pool_id)]

    def _desktop_label(self) -> str:
        return (
            _("your desktop “{name}”").format(name=self.desktop.name) if self.desktop else _("your desktop")
        )

    def _checked(self, desktop: Desktop | None) -> list[Effect]:
        still_ours = (
            desktop is not None
            and self.desktop is not None
            and desktop.vm_id == self.desktop.vm_id
            and desktop.state in SHOWING_STATES
        )
        if not still_ours:
            # The desktop was shut down, or the session ended: the viewer closed for good.
            return self._release()
        assert self._pool_id is not None
        name = self._desktop_label()
        if self.reconnect and self._reconnects < MAX_RECONNECTS:
            self._reconnects += 1
            pool_id = self._pool_id
            effects = self._request(pool_id)
            self.status = _("The connection was lost; reconnecting to {desktop}…").format(desktop=name)
            return effects
        lost = (
            ngettext(
                "The connection to {desktop} was lost {count} time in a row.",
                "The connection to {desktop} was lost {count} times in a row.",
                self._reconnects,
            ).format(desktop=name, count=self._reconnects)
            if self.reconnect
            else _("The viewer closed, and {desktop} is still running.").format(desktop=name)
        )
        self._error(
            _("{message} Retry connects again; Back ends the session and frees the desktop.").format(
                message=lost
            ),
            retry=RequestDesktop(self._pool_id),
            retry_phase=Phase.REQUESTING,
            dismiss_releases=True,
        )
        return []

    def _released(self) -> list[Effect]:
        self.lease = None
        if self._pending_error is not None:
            message, self._pending_error = self._pending_error, None
            self._error(message, retry=None, dismiss_ends_session=False)
            return []
        return self._finish_session(notice=_("Your session has ended."))

    def _finish_session(self, *, notice: str, restart: bool = True) -> list[Effect]:
        effects: list[Effect] = [CallLogout()] if self.user is not None else []
        self.user = None
        self.pools = None
        self.lease = None
        self.desktop = None
        self.failover = None
        self._credentials = None
        self._pending_error = None
        if restart and self.kiosk.restart and self.auto_login is not None:
            delay = self.kiosk.restart_delay
            self._to(
                Phase.LOGGED_OUT,
                notice=_("{notice} Reconnecting in {delay:g} s…").format(notice=notice, delay=delay),
            )
            effects.append(Schedule(delay, Started()))
        else:
            self._to(Phase.LOGGED_OUT, notice=notice)
        return effects

    def _power(self, vm_id: int, action: str) -> list[Effect]:
        if action not in POWER_ACTIONS:
            self.notice = _("Unknown power action {action!r}.").format(action=action)
            return []
        self.notice = _("{action}: sending to {desktop}…").format(
            action=_(POWER_ACTIONS[action]), desktop=self._desktop_name(vm_id)
        )
        return [CallPower(vm_id, action)]

    # -- failures -----------------------------------------------------------------

    def _error(
        self,
        message: str,
        *,
        retry: Effect | None,
        retry_phase: Phase = Phase.LOGGED_OUT,
        dismiss_ends_session: bool = False,
        dismiss_releases: bool = False,
    ) -> None:
        self._to(Phase.ERROR)
        self.error = message
        self.can_retry = retry is not None
        self._retry = retry
        self._retry_phase = retry_phase
        self._dismiss_ends_session = dismiss_ends_session
        self._dismiss_releases = dismiss_releases

    def _retry_failed(self) -> list[Effect]:
        retry = self._retry
        if retry is None:
            return self._dismiss()
        if isinstance(retry, RequestDesktop):
            return self._request(retry.pool_id)
        if isinstance(retry, StartFailoverViewer):
            return self._start_failover(retry.failover, None)
        status = {
            Phase.LOGGING_IN: _("Logging in…"),
            Phase.RELEASING: _("Ending the session…"),
            Phase.CHOOSING_POOL: "",
        }.get(self._retry_phase, "")
        self._to(self._retry_phase, status=status)
        return [retry]

    def _dismiss(self) -> list[Effect]:
        if self._dismiss_releases and self.lease is not None:
            return self._release()
        if self.user is None:  # a failed log-in: back to an empty form
            self._credentials = None
            self._to(Phase.LOGGED_OUT)
            return []
        if self._dismiss_ends_session:
            return self._finish_session(notice=_("Your session has ended."), restart=False)
        return self._enter_pools(notice=None)

    def _call_failed(self, failed: CallFailed) -> list[Effect]:
        effect, failure, message = failed.effect, failed.failure, failed.message
        match effect:
            case SendHeartbeat(lease_id=lease_id) if self._viewing(lease_id):
                return self._heartbeat_failed(lease_id, failure, message)
            case ReleaseLease(lease_id=lease_id) if self.phase is Phase.RELEASING:
                if failure is Failure.UNREACHABLE:
                    self._error(
                        _(
                            "{message} The desktop session on this thin client has ended; the dashboard "
                            "frees the desktop by itself when its lease expires."
                        ).format(message=message),
                        retry=effect,
                        retry_phase=Phase.RELEASING,
                        dismiss_ends_session=True,
                    )
                    return []
                # Already gone (ended by an admin, expired, or our token is gone): nothing left to release.
                return self._released() if self._is_lease(lease_id) else []
            case CallLogin() if self.phase is Phase.LOGGING_IN:
                self._error(message, retry=effect, retry_phase=Phase.LOGGING_IN, dismiss_ends_session=True)
                return []
            case CallLogout():
                return []
            case CheckDesktop() if self.phase is Phase.RECONNECTING:
                return self._check_failed(failure, message)
        if failure is Failure.SESSION_ENDED and self.phase in (
            Phase.CHOOSING_POOL,
            Phase.REQUESTING,
            Phase.BOOTING,
        ):
            return self._finish_session(notice=message, restart=False)
        match effect:
            case FetchPools() if self.phase is Phase.CHOOSING_POOL:
                self._error(message, retry=effect, retry_phase=Phase.CHOOSING_POOL)
            case RequestDesktop() if self.phase in (Phase.REQUESTING, Phase.BOOTING):
                if failure is Failure.REFUSED:
                    return self._enter_pools(notice=message)
                self._error(message, retry=effect, retry_phase=Phase.REQUESTING)
            case CallPower() if self.phase is Phase.CHOOSING_POOL:
                if failure is Failure.REFUSED:
                    self.notice = message
                else:
                    self._error(message, retry=effect, retry_phase=Phase.CHOOSING_POOL)
            case _:
                log.debug("session: ignoring failure of %s in phase %s", type(effect).__name__, self.phase)
        return []

    def _heartbeat_failed(self, lease_id: str, failure: Failure, message: str) -> list[Effect]:
        assert self.lease is not None
        if failure in (Failure.LEASE_ENDED, Failure.SESSION_ENDED):
            # The dashboard has ended the session; the viewer will be disconnected and exit.
            self.notice = _("The dashboard has ended this session.")
            return []
        self.heartbeat_failures += 1
        self.notice = _("{message} The desktop stays open; the launcher keeps trying.").format(
            message=message
        )
        return [Schedule(min(self.lease.heartbeat_interval, HEARTBEAT_RETRY), HeartbeatDue(lease_id))]

    def _check_failed(self, failure: Failure, message: str) -> list[Effect]:
        if failure is Failure.SESSION_ENDED:
            return self._finish_session(notice=message, restart=False)
        if failure is Failure.REFUSED:
            return self._release()
        # No answer (the dashboard may be restarting): ask again for a while, then let the user decide.
        self._check_attempts += 1
        if self._check_attempts < CHECK_ATTEMPTS:
            self.notice = _("{message} Trying again…").format(message=message)
            return [Schedule(CHECK_RETRY, CheckDue(self._check_attempts))]
        assert self._pool_id is not None
        self._error(
            _(
                "{message} Retry connects to your desktop again; Back ends the session here (the "
                "dashboard frees the desktop by itself when its lease expires)."
            ).format(message=message),
            retry=RequestDesktop(self._pool_id),
            retry_phase=Phase.REQUESTING,
            dismiss_releases=True,
        )
        return []
