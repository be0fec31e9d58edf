"""Events the session state machine reacts to, and the effects it asks the controller to carry out.

Events come from the user (the UI), from finished broker calls and viewer
processes, and from timers. Effects are plain data: the machine never performs
I/O itself, which keeps it testable without a network, a display or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kvm_vdi_client.model import Desktop, DesktopAnswer, Failover, Pool, SpiceConnection, User


class Phase(StrEnum):
    LOGGED_OUT = "LoggedOut"
    LOGGING_IN = "LoggingIn"
    CHOOSING_POOL = "ChoosingPool"
    REQUESTING = "Requesting"
    BOOTING = "Booting"
    VIEWING = "Viewing"
    # The viewer closed: is the desktop still ours and running (a lost connection), or did it end?
    RECONNECTING = "Reconnecting"
    RELEASING = "Releasing"
    FAILOVER = "Failover"
    ERROR = "Error"  # i18n-ignore: a phase's name for logs and code, never shown


class Failure(StrEnum):
    """Why a broker call failed, as far as the session cares."""

    UNREACHABLE = "unreachable"  # no answer: network, TLS, dashboard down
    SESSION_ENDED = "session_ended"  # 401: the token is gone
    REFUSED = "refused"  # a clear "no" from the dashboard (403, 409, 404, ...)
    LEASE_ENDED = "lease_ended"  # heartbeat/release on a lease that no longer exists
    BROKEN = "broken"  # an answer that does not follow the API contract, or a server error


# -- effects -----------------------------------------------------------------


@dataclass(frozen=True)
class CallLogin:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class CallLogout:
    pass


@dataclass(frozen=True)
class FetchPools:
    pass


@dataclass(frozen=True)
class RequestDesktop:
    pool_id: int


@dataclass(frozen=True)
class CheckDesktop:
    """Ask the dashboard (pool list) whether the user's desktop of this pool is still held and running."""

    pool_id: int


@dataclass(frozen=True)
class StartSpiceViewer:
    connection: SpiceConnection


@dataclass(frozen=True)
class StartFailoverViewer:
    failover: Failover
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SendHeartbeat:
    lease_id: str


@dataclass(frozen=True)
class ReleaseLease:
    lease_id: str


@dataclass(frozen=True)
class CallPower:
    vm_id: int
    action: str


@dataclass(frozen=True)
class Schedule:
    """Deliver ``event`` after ``delay`` seconds (the controller's timer, or Tk's ``after``)."""

    delay: float
    event: Event


Effect = (
    CallLogin
    | CallLogout
    | FetchPools
    | RequestDesktop
    | CheckDesktop
    | StartSpiceViewer
    | StartFailoverViewer
    | SendHeartbeat
    | ReleaseLease
    | CallPower
    | Schedule
)


# -- events from the user ------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The launcher came up (or a kiosk restart is due)."""


@dataclass(frozen=True)
class LoginSubmitted:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PoolChosen:
    pool_id: int


@dataclass(frozen=True)
class RefreshRequested:
    pass


@dataclass(frozen=True)
class ChoosePoolRequested:
    """While a desktop is being requested: leave it and show the pool list instead."""


@dataclass(frozen=True)
class PowerRequested:
    vm_id: int
    action: str


@dataclass(frozen=True)
class LogoutRequested:
    pass


@dataclass(frozen=True)
class RetryRequested:
    pass


@dataclass(frozen=True)
class Dismissed:
    pass


# -- events from broker calls, viewers and timers ------------------------------


@dataclass(frozen=True)
class LoggedIn:
    user: User


@dataclass(frozen=True)
class LoginRejected:
    message: str


@dataclass(frozen=True)
class PoolsLoaded:
    pools: tuple[Pool, ...]


@dataclass(frozen=True)
class DesktopAnswered:
    answer: DesktopAnswer


@dataclass(frozen=True)
class BootRetryDue:
    pool_id: int
    attempt: int


@dataclass(frozen=True)
class ViewerFailed:
    message: str


@dataclass(frozen=True)
class ViewerExited:
    returncode: int


@dataclass(frozen=True)
class DesktopChecked:
    pool_id: int
    # The user's desktop of that pool as the dashboard sees it now; None when no longer held.
    desktop: Desktop | None


@dataclass(frozen=True)
class CheckDue:
    attempt: int


@dataclass(frozen=True)
class HeartbeatDue:
    lease_id: str


@dataclass(frozen=True)
class HeartbeatAccepted:
    lease_id: str


@dataclass(frozen=True)
class Released:
    lease_id: str


@dataclass(frozen=True)
class PowerDone:
    vm_id: int
    action: str
    state: str


@dataclass(frozen=True)
class CallFailed:
    effect: Effect
    failure: Failure
    message: str


Event = (
    Started
    | LoginSubmitted
    | PoolChosen
    | RefreshRequested
    | ChoosePoolRequested
    | PowerRequested
    | LogoutRequested
    | RetryRequested
    | Dismissed
    | LoggedIn
    | LoginRejected
    | PoolsLoaded
    | DesktopAnswered
    | BootRetryDue
    | ViewerFailed
    | ViewerExited
    | DesktopChecked
    | CheckDue
    | HeartbeatDue
    | HeartbeatAccepted
    | Released
    | PowerDone
    | CallFailed
)
