"""The admin API's answers about pools, accounts, directory groups and desktop sessions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.api.out import Out, UtcTime
from app.broker.leases import ActiveSession
from app.broker.pools import PooledVm
from app.cluster.census import OpenConsole
from app.db.records import DirectoryGroupRecord, PoolRecord, UserRecord

# --- pools ----------------------------------------------------------------------------------------


class PoolOut(Out):
    id: int
    name: str
    description: str
    maintenance: bool = Field(description="true: no desktop of the pool is handed out")
    lease_timeout_min: int = Field(description="minutes a desktop stays held without a heartbeat")
    reset_on_handout: bool
    keep_ready: int = Field(description="desktops kept started for the next users")
    max_per_user: int
    failover_kind: Literal["none", "rdp", "horizon"]
    failover_host: str
    failover_domain: str
    failover_pool: str
    straight_to_desktop: bool
    clipboard: bool = Field(description="device policy: clipboard sharing allowed")
    file_transfer: bool = Field(description="device policy: file transfer allowed")
    usb_redirect: int = Field(description="device policy: USB redirection channels (0: none)")
    user_snapshots: int = Field(description="snapshots the user of a persistent desktop may keep (0: none)")
    created_at: UtcTime | None
    size: int = Field(description="desktops in the pool")
    free: int = Field(description="desktops that could be handed out now")

    @classmethod
    def of(cls, pool: PoolRecord, counts: tuple[int, int]) -> PoolOut:
        return cls(
            id=pool.id,
            name=pool.name,
            description=pool.description,
            maintenance=pool.maintenance,
            lease_timeout_min=pool.lease_timeout_min,
            reset_on_handout=pool.reset_on_handout,
            keep_ready=pool.keep_ready,
            max_per_user=pool.max_per_user,
            failover_kind=pool.failover_kind,  # type: ignore[arg-type]
            failover_host=pool.failover_host,
            failover_domain=pool.failover_domain,
            failover_pool=pool.failover_pool,
            straight_to_desktop=pool.straight_to_desktop,
            clipboard=pool.clipboard,
            file_transfer=pool.file_transfer,
            usb_redirect=pool.usb_redirect,
            user_snapshots=pool.user_snapshots,
            created_at=pool.created_at,
            size=counts[0],
            free=counts[1],
        )


class PoolList(Out):
    """Every pool, by name."""

    pools: list[PoolOut]


class PoolVmOut(Out):
    id: int
    name: str
    kind: str
    state: str
    hypervisor: str
    maintenance: bool
    assigned_to: str | None = Field(description="the user holding it; null: nobody")

    @classmethod
    def of(cls, vm: PooledVm) -> PoolVmOut:
        return cls(
            id=vm.id,
            name=vm.name,
            kind=vm.kind,
            state=vm.state,
            hypervisor=vm.hypervisor_name,
            maintenance=vm.maintenance,
            assigned_to=vm.assigned_to,
        )


class MemberUser(Out):
    id: int
    username: str
    display_name: str


class MemberGroup(Out):
    id: int
    name: str


class PoolMembersOut(Out):
    vms: list[PoolVmOut]
    users: list[MemberUser] = Field(description="portal users the pool is granted to directly")
    groups: list[MemberGroup] = Field(description="directory groups whose members may use the pool")


class PoolAnswer(Out):
    """The pool, its members and who may use it."""

    pool: PoolOut
    members: PoolMembersOut
    policy_pending: list[str] = Field(
        default_factory=list,
        description="running desktops a changed device policy reaches at their next start",
    )


class PoolDeletePlan(Out):
    """What deleting the pool does, to confirm: the memberships go, the VMs stay."""

    pool: PoolOut
    members: PoolMembersOut
    in_use: int = Field(description="desktops held now; deleting is refused until it is 0")


class VmsAddedOut(Out):
    """Desktops in the pool now among those asked for (each gets the pool's device policy)."""

    added: list[int]
    members: PoolMembersOut


class PortalSettings(Out):
    """What the portal shows and does for every pool."""

    motd: str = Field(description="the message of the day on the portal's log-in page ('' for none)")
    straight_to_desktop: bool = Field(
        description="in every pool, a user with one desktop to use goes straight to it after log-in"
    )


# --- accounts and directory groups ----------------------------------------------------------------


class UserOut(Out):
    id: int
    username: str
    source: str = Field(description="local, or the directory the account comes from")
    role: Literal["admin", "client"]
    disabled: bool
    must_change_password: bool
    display_name: str
    email: str
    created_at: UtcTime | None
    last_login_at: UtcTime | None

    @classmethod
    def of(cls, user: UserRecord) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            source=user.source,
            role=user.role,
            disabled=user.disabled,
            must_change_password=user.must_change_password,
            display_name=user.display_name,
            email=user.email,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )


class UserList(Out):
    """Every account: administrators first, then portal users, by name."""

    users: list[UserOut]


class UserAnswer(Out):
    user: UserOut


class UserWithPassword(Out):
    """The account and its new password: keep it now, it is never shown again."""

    user: UserOut
    password: str = Field(description="generated; administrators choose their own at their next log-in")


class GroupOut(Out):
    id: int
    name: str
    description: str
    created_at: UtcTime | None
    pool_ids: list[int] = Field(description="the pools its members may use")

    @classmethod
    def of(cls, group: DirectoryGroupRecord, pool_ids: list[int]) -> GroupOut:
        return cls(
            id=group.id,
            name=group.name,
            description=group.description,
            created_at=group.created_at,
            pool_ids=pool_ids,
        )


class GroupList(Out):
    """The registered directory groups, by name."""

    groups: list[GroupOut]


class GroupAnswer(Out):
    group: GroupOut


# --- desktop sessions -----------------------------------------------------------------------------


class ConsoleOut(Out):
    via: str = Field(description="websocket (a browser) or gateway (remote-viewer)")
    client_address: str
    started_at: str
    replica: str = Field(description="the dashboard replica serving it ('' for one process)")

    @classmethod
    def of(cls, console: OpenConsole) -> ConsoleOut:
        return cls(
            via=console.via,
            client_address=console.client_address,
            started_at=console.started_at,
            replica=console.replica,
        )


class SessionOut(Out):
    id: int = Field(description="the lease")
    user_id: int
    username: str
    display_name: str
    vm_id: int
    vm_name: str
    vm_state: str
    pool_id: int | None
    pool_name: str | None
    hypervisor: str
    client_address: str
    started_at: UtcTime
    last_heartbeat_at: UtcTime
    expires_at: UtcTime
    consoles: list[ConsoleOut] = Field(description="its open consoles, on any replica")

    @classmethod
    def of(cls, session: ActiveSession, consoles: list[OpenConsole]) -> SessionOut:
        return cls(
            id=session.id,
            user_id=session.user_id,
            username=session.username,
            display_name=session.display_name,
            vm_id=session.vm_id,
            vm_name=session.vm_name,
            vm_state=session.vm_state,
            pool_id=session.pool_id,
            pool_name=session.pool_name,
            hypervisor=session.hypervisor_name,
            client_address=session.client_address,
            started_at=session.started_at,
            last_heartbeat_at=session.last_heartbeat_at,
            expires_at=session.expires_at,
            consoles=[ConsoleOut.of(console) for console in consoles],
        )


class SessionList(Out):
    """Who holds which desktop, oldest first."""

    sessions: list[SessionOut]
