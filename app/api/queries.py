"""The query parameters of the JSON endpoints that take some, declared once.

Read with :func:`app.api.reader.read_query`: values arrive as text and are converted
(``"3"``, ``"true"``); a value that cannot be is refused naming its parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VmFilter(Query):
    hypervisor_id: Id | None = Field(default=None, description="only the VMs of this hypervisor")


class DeleteQuery(Query):
    with_children: bool = Field(default=False, description="an initial VM with its VDI children")
    remove_disks: bool = Field(default=False, description="also remove the disk files")


class OperationFilter(Query):
    active: bool = Field(default=False, description="only pending and running operations")


class TokenFilter(Query):
    all: bool = Field(default=False, description="every administrator's tokens, not only yours")


class AuditQuery(Query):
    actor: str | None = Field(default=None, max_length=128, description="who did it (user name)")
    action: str | None = Field(default=None, max_length=64, description="e.g. vm_power, login_failed")
    target: str | None = Field(default=None, max_length=255, description="what it was done to (a name)")
    since: datetime | None = Field(default=None, description="at or after this time (UTC)")
    until: datetime | None = Field(default=None, description="before this time (UTC)")
    before: Id | None = Field(default=None, description="the next page: the next_before of the previous one")
    limit: int = Field(default=100, ge=1, le=500, description="records per page")
