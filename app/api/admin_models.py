"""The answers of the admin API's areas beyond hypervisors and VMs (:mod:`app.api.responses`):
API tokens, pools, accounts, directory groups, sessions, audit, usage and retention."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api.out import Out, UtcTime
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
