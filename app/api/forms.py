"""The browser forms' bodies (``application/x-www-form-urlencoded``) and the pages' query
strings, declared once for the description of every route.

A form sends text; each handler (or the domain code it calls) turns the text into values
and answers a mistake next to its field, on the page. These models say which fields a
form sends: the OpenAPI description of the pages is generated from them, and the suite
fuzzes every form through it. Every form also carries the session's CSRF token
(``csrf_token``, or the ``X-CSRF-Token`` header), which no model lists: it is the CSRF
middleware's business.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.broker.pools import PoolSettings
from app.inventory.hypervisors import FIELDS as HYPERVISOR_FIELDS


class Form(BaseModel):
    """Text fields; what a browser sends beyond them is ignored."""

    model_config = ConfigDict(extra="ignore")


def _text_form(name: str, doc: str, names: tuple[str, ...]) -> type[Form]:
    values: dict[str, Any] = {field: (str, "") for field in names}
    return create_model(name, __base__=Form, __doc__=doc, **values)


class NoFields(Form):
    """A button: the form carries only the CSRF token."""


class VmListingQuery(Form):
    """The VM table's filters, sorting and page (what the VM page's address carries)."""

    q: str = ""
    state: str = ""
    # a pool id, or "none"
    pool: str = ""
    hypervisor: str = ""
    user: str = ""
    flag: str = ""
    kind: str = ""
    sort: str = ""
    # "desc" or ascending
    dir: str = ""
    page: str = ""


class RowsQuery(Form):
    # Comma-separated VM ids (at most the first few hundred are read).
    ids: str = ""


class LanguageForm(Form):
    # "en" or "lt"; anything else changes nothing.
    language: str = ""
    # Where to go back to (a path of this site; default: the page the form was on).
    next: str = ""


class LoginForm(Form):
    username: str = ""
    password: str = ""
    # Where to go after logging in (a path of this site).
    next: str = ""


class PortalLoginForm(Form):
    username: str = ""
    password: str = ""
    # "local" or "directory" (empty: the portal's default).
    realm: str = ""


class PasswordForm(Form):
    current_password: str = ""
    new_password: str = ""
    repeat_password: str = ""


HypervisorForm = _text_form("HypervisorForm", "A hypervisor's record.", HYPERVISOR_FIELDS)


class HostKeyForm(Form):
    fingerprint: str = ""
    # "on" once the admin compared the fingerprints.
    verified: str = ""


class NewVmForm(Form):
    mode: str = "single"
    kind: str = "simple"
    hypervisor_id: str = ""
    name: str = ""
    disk_path: str = ""
    prefix: str = ""
    count: str = ""
    vcpu_sockets: str = ""
    vcpu_cores: str = ""
    memory_mib: str = ""
    disk_size_gib: str = ""
    os_type: str = ""
    network: str = ""
    iso_path: str = ""
    boot_1: str = ""
    boot_2: str = ""
    boot_3: str = ""


class NewInitialForm(Form):
    name: str = ""
    source_id: str = ""
    memory_mib: str = ""
    vcpu_sockets: str = ""
    vcpu_cores: str = ""


class NewVdiForm(Form):
    initial_id: str = ""
    prefix: str = ""
    count: str = ""
    # "on" when ticked.
    volatile: str = ""


PoolForm = _text_form(
    "PoolForm",
    'A pool\'s settings (check boxes send "on").',
    tuple(field.name for field in dataclass_fields(PoolSettings) if field.name != "errors"),
)


class PoolVmsForm(Form):
    vm_id: list[str] = []


class PoolMembersForm(Form):
    user_id: list[str] = []
    group_id: list[str] = []


class MotdForm(Form):
    motd: str = ""


class StraightForm(Form):
    # "1": every pool opens a user's sole desktop at log-in; anything else: each pool decides.
    straight_to_desktop: str = ""


class NewUserForm(Form):
    username: str = ""
    # "client" (portal user) or "admin".
    role: str = "client"
    display_name: str = ""
    email: str = ""


class DisableForm(Form):
    # "1" disables, anything else enables.
    disabled: str = ""


class GroupForm(Form):
    name: str = ""
    description: str = ""


class ScheduleForm(Form):
    # keep_ready, power_off, reset or populate
    kind: str = ""
    # mon … sun, repeated
    days: list[str] = []
    # HH:MM in the dashboard's time zone
    at: str = ""
    until: str = ""
    count: str = ""
    # "on" when ticked (absent: on)
    enabled: str = ""


class ScheduleActionForm(Form):
    # enable, disable or delete
    action: str = ""


class FixedAddressForm(Form):
    # An IPv4 address, or empty to remove it.
    fixed_address: str = ""


class NewTokenForm(Form):
    name: str = ""
    # Days until it expires ("0": never).
    expires_in_days: str = "0"
    # "on" when ticked.
    read_only: str = ""


# --- query strings of pages ---------------------------------------------------------------------


class Toast(Form):
    """A page that can show the outcome of the last action."""

    toast: str = ""
    toast_kind: str = ""


class NextPage(Form):
    next: str = ""


class UsageQuery(Form):
    # Days YYYY-MM-DD in the dashboard's time zone (default: the last 30 days).
    from_: str = Field("", alias="from")
    to: str = ""
    # A pool's id (empty: every pool).
    pool: str = ""


class AuditPageQuery(Form):
    """The Audit page's filters (what its address carries)."""

    user: str = ""
    # a VM's name (the record's target)
    vm: str = ""
    # a pool's id
    pool: str = ""
    action: str = ""
    # YYYY-MM-DD HH:MM (UTC)
    since: str = ""
    until: str = ""
    # the next page: records below this id
    before: str = ""


class NewVmQuery(Form):
    hypervisor_id: str = ""
    mode: str = ""
    kind: str = ""


class NewInitialQuery(Form):
    source_id: str = ""


class NewVdiQuery(Form):
    initial_id: str = ""


class ThumbnailQuery(Form):
    v: str = ""


class VvQuery(Form):
    fullscreen: str = ""
