"""The request bodies of the admin API's areas beyond hypervisors and VMs: API tokens, pools,
accounts, directory groups, sessions and settings. Strict, unknown fields refused, as every
JSON body (:mod:`app.api.bodies`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from app.api.bodies import Body
from app.broker.preferences import MOTD_LIMIT
from app.vms.devices.usb import MAX_REDIRECTIONS

Name = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class NewToken(Body):
    """A personal API token to make (its secret is in the answer, once)."""

    name: Name
    read_only: StrictBool = False
    # Days until it expires; absent or null: it does not expire.
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=3650)] | None = None


# --- pools (``/api/v1/admin/pools``) --------------------------------------------------------------

Line = Annotated[StrictStr, Field(max_length=255)]
Ids = Annotated[list[Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]], Field(max_length=1000)]


class PoolFields(Body):
    """A pool's settings; PATCH sends only what changes. The defaults are a new pool's; the
    rules that read several fields (a failover's host and pool) are the form's
    (:meth:`app.broker.pools.PoolSettings.from_form`)."""

    name: Annotated[StrictStr, Field(max_length=64)] = ""
    description: Line = ""
    lease_timeout_min: Annotated[StrictInt, Field(ge=1, le=7 * 24 * 60)] = 5
    reset_on_handout: StrictBool = True
    keep_ready: Annotated[StrictInt, Field(ge=0, le=1000)] = 0
    max_per_user: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    maintenance: StrictBool = False
    failover_kind: Literal["none", "rdp", "horizon"] = "none"
    failover_host: Line = ""
    failover_domain: Line = ""
    failover_pool: Line = ""
    straight_to_desktop: StrictBool = False
    # Device policy of the pool's desktops: all off unless allowed.
    clipboard: StrictBool = False
    file_transfer: StrictBool = False
    usb_redirect: Annotated[StrictInt, Field(ge=0, le=MAX_REDIRECTIONS)] = 0
    user_snapshots: Annotated[StrictInt, Field(ge=0, le=50)] = 0

    def sent(self) -> dict[str, Any]:
        """The fields the request named (PATCH changes only these)."""
        return self.model_dump(include=self.model_fields_set)


class PoolVms(Body):
    """Desktops to add to the pool (VDI and simple VMs in no other pool)."""

    vm_ids: Annotated[Ids, Field(min_length=1)]


class PoolMembersChange(Body):
    """Who may use the pool; a list left out stays as it is, an empty one clears it."""

    user_ids: Ids | None = None
    group_ids: Ids | None = None


# --- accounts and directory groups (``/api/v1/admin/users``, ``/groups``) ----------------------


class NewAccount(Body):
    """A local account; its generated password is in the answer, once."""

    username: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    role: Literal["client", "admin"] = "client"
    display_name: Line = ""
    email: Line = ""


class AccountChange(Body):
    """Disable an account (its sessions, tokens and consoles end) or enable it again."""

    disabled: StrictBool


class NewGroup(Body):
    """A directory group to register: its name (e.g. vdi-users) or its full DN."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    description: Line = ""


class PortalChange(Body):
    """The portal's settings on the pools page; a field left out stays as it is."""

    motd: Annotated[StrictStr, Field(max_length=MOTD_LIMIT)] | None = None
    straight_to_desktop: StrictBool | None = None
