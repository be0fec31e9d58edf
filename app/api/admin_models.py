"""The answers of the admin API's areas beyond hypervisors and VMs (:mod:`app.api.responses`):
API tokens, pools, accounts, directory groups, sessions, audit, usage and retention."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.api.out import Out, UtcTime
from app.api.responses import Connection
from app.auth.personal_tokens import PersonalToken

# --- personal API tokens --------------------------------------------------------------------------


class TokenRecord(Out):
    id: int
    name: str
    username: str = Field(description="the administrator it acts as")
    read_only: bool
    created_at: UtcTime
    expires_at: UtcTime | None = Field(description="null: it does not expire")
    last_used_at: UtcTime | None = Field(description="to the minute")

    @classmethod
    def of(cls, token: PersonalToken) -> TokenRecord:
        return cls(
            id=token.id,
            name=token.name,
            username=token.username,
            read_only=token.read_only,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
        )


class TokenList(Out):
    """Live personal tokens, newest first."""

    tokens: list[TokenRecord]


class TokenCreated(Out):
    """The new token: keep ``secret`` now, it is never shown again."""

    secret: str = Field(description="send it as Authorization: Bearer <secret>")
    token: TokenRecord


# --- pool schedules -------------------------------------------------------------------------------


class ScheduleRun(Out):
    at: str | None = Field(description="when it started, ISO 8601 in the dashboard's time zone")
    finished_at: str | None
    status: str | None
    result: str | None


class ScheduleOut(Out):
    id: int
    pool_id: int
    kind: Literal["keep_ready", "power_off", "reset", "populate"]
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]]
    at: str = Field(description="HH:MM in the dashboard's time zone")
    until: str | None = Field(description="keep_ready: when the window closes (HH:MM)")
    count: int = Field(description="keep_ready: how many desktops to keep started")
    enabled: bool
    description: str
    time_zone: str
    next_run: str | None = Field(description="ISO 8601 in the dashboard's time zone; null when disabled")
    window_open: bool
    last_run: ScheduleRun | None


class ScheduleList(Out):
    """The pool's schedules."""

    schedules: list[ScheduleOut]
    time_zone: str


class ScheduleAnswer(Out):
    """The schedule."""

    schedule: ScheduleOut


class ScheduleDeleted(Out):
    """The schedule is gone."""

    deleted: int


# --- audit ----------------------------------------------------------------------------------------


class AuditRecordOut(Out):
    id: int
    at: UtcTime
    actor: str
    action: str
    target: str
    client_address: str
    details: dict[str, Any] = Field(description="what else the action names; never a secret")


class AuditPageOut(Out):
    """Audit records, newest first, one page."""

    records: list[AuditRecordOut]
    next_before: int | None = Field(description="pass as before= for the next page; null on the last")


class TestAlertOut(Out):
    """Where a test alert went: queued on each channel's queue (dropped where one was full), or held
    back by the rate limit (the latest goes out when the window ends)."""

    channels: list[str] = Field(description="the configured channels")
    queued: list[str]
    dropped: list[str] = Field(description="channels whose queue was full")
    held_back: bool


class AdminConsole(Out):
    """A console of a VM for an administrator: the connection as the broker API gives a client,
    with when its ticket and SPICE password expire."""

    vm: dict[str, int | str] = Field(description="id and name")
    connection: Connection
    expires_at: UtcTime = Field(description="the ticket opens new connections until then")
    password_valid_until: UtcTime
