"""The answers of the broker API, the portal's JSON calls and the admin API's inventory
(hypervisors, VMs, operations), declared once as models.

The handlers build these answers from the domain's own records; the OpenAPI description is
generated from the models, and the test suite validates every JSON answer it receives
against that description, so an answer that gains an undescribed field fails a test.
The admin API's other areas answer with :mod:`app.api.admin_models`.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, create_model

from app.api.errors import Desktop, Failover
from app.api.out import Out
from app.vms.records import Vm

# --- broker API and portal ----------------------------------------------------------------------


class UserInfo(Out):
    username: str
    display_name: str
    source: Literal["local", "directory"]


class LoggedIn(Out):
    """Logged in: a bearer token for the other calls."""

    token: str
    expires_at: datetime
    user: UserInfo


class OwnDesktop(Desktop):
    """The user's own desktop of a pool."""

    snapshots: int = Field(description="snapshots the user may keep of it (0: none)")


class BrokerPool(Out):
    id: int
    name: str
    description: str
    size: int
    free: int
    maintenance: bool
    failover: Failover | None
    straight_to_desktop: bool = Field(description="opens a user's sole desktop at log-in")
    desktop: OwnDesktop | None = Field(description="the user's own desktop of this pool, if any")


class BrokerPools(Out):
    """The pools the user may use, with free desktops and the user's own desktop."""

    pools: list[BrokerPool]
    straight_to: int | None = Field(description="the pool whose desktop to open at once after log-in")


class Lease(Out):
    id: int
    expires_at: datetime | None
    heartbeat_interval: int = Field(description="seconds between heartbeats")


class Connection(Out):
    protocol: Literal["spice"]
    host: str
    port: int | None = Field(description="plain SPICE port; null when TLS only")
    tls_port: int | None = Field(description="SPICE TLS port (client and qemu talk TLS)")
    host_subject: str | None = Field(
        default=None, description="subject of the TLS certificate (with tls_port)"
    )
    ca: str | None = Field(
        default=None, description="PEM of the dashboard's CA that signed it (with tls_port)"
    )
    password: str = Field(description="SPICE password, valid for a short time")
    ticket: str = Field(description="console ticket for the gateway (60 s for new connections)")
    proxy: str = Field(description="http://ticket:<ticket>@<gateway>:<port> for remote-viewer")
    title: str
    vv: str = Field(description="a complete .vv file for remote-viewer")
    console_url: str = Field(description="the in-browser console page of this desktop")


class DesktopReady(Out):
    status: Literal["ready"]
    lease: Lease
    desktop: Desktop
    connection: Connection | None = Field(default=None, description="absent in the portal's answer")
    console_url: str | None = Field(default=None, description="the portal's console page of the desktop")


class DesktopFailover(Out):
    status: Literal["failover"]
    reason: str
    failover: Failover


class DesktopGranted(RootModel[Annotated[DesktopReady | DesktopFailover, Field(discriminator="status")]]):
    """Ready to connect, or the pool's failover when all its hypervisors are down."""


class DesktopBooting(Out):
    """The desktop is starting: ask again after retry_after seconds."""

    status: Literal["booting"]
    retry_after: int
    desktop: Desktop


class LeaseExpiry(Out):
    """The lease goes on until then."""

    expires_at: datetime


class PowerStarted(Out):
    """The action started."""

    state: str


class ConsoleGrantBody(Out):
    """The console's SPICE password; the ticket comes in an HttpOnly cookie for the websocket."""

    vm: dict[str, int | str] = Field(description="id and name")
    password: str
    websocket_path: str
    expires_at: datetime
    password_valid_until: datetime


# --- admin: overview ----------------------------------------------------------------------------


class Summary(Out):
    """The overview's figures."""

    hypervisors_total: int
    hypervisors_up: int
    hypervisors_down: int
    hypervisors_maintenance: int
    hypervisors_unknown: int
    vms_total: int
    vms_running: int
    pools_total: int
    sessions_active: int


# --- admin: hypervisors -------------------------------------------------------------------------


class HostKeyInfo(Out):
    algorithm: str
    fingerprint: str
    confirmed: bool


class Hypervisor(Out):
    """A hypervisor: its record, its state and what it offers."""

    id: int
    name: str
    transport: Literal["ssh", "local", "test"]
    address: str
    ssh_port: int
    ssh_user: str
    libvirt_uri: str | None
    spice_address: str
    spice_plain: bool = Field(description="plain (unencrypted) SPICE allowed beside TLS, for old clients")
    images_dir: str
    volatile_dir: str
    iso_dir: str
    maintenance: bool
    state: Literal["unknown", "up", "down"]
    reason: str
    reason_code: str
    connected: bool
    state_changed_at: datetime | None
    last_check_at: datetime | None
    libvirt_version: str
    cpus: int | None
    memory_mib: int | None
    images_free_bytes: int | None
    host_key: HostKeyInfo | None
    display: dict[str, str] = Field(description="the figures as the hypervisor list shows them")


class HypervisorList(Out):
    """Every hypervisor."""

    hypervisors: list[Hypervisor]


class PresentedKey(Out):
    key: str
    fingerprint: str


class HostKeyView(Out):
    """The key the hypervisor presents now beside the pinned one."""

    presented: PresentedKey | None
    pinned: HostKeyInfo | None
    changed: bool
    error: str | None


class CheckOutcome(Out):
    """What the check found."""

    ok: bool
    reason: str
    figures: dict[str, Any]
    message: str
    hypervisor: Hypervisor


class Iso(Out):
    path: str
    name: str
    size: int


class IsoList(Out):
    """The ISO images in the hypervisor's ISO directory."""

    isos: list[Iso]


class ImageFile(Out):
    path: str
    name: str
    size: int = Field(description="bytes on disk")
    format: str | None = Field(description="what qemu-img reads (qcow2, raw ...); null if it cannot")
    virtual_size: int
    backing_file: str | None
    disk_of: str | None = Field(description="the VM whose disk it already is")
    importable: bool = Field(description="a qcow2 or raw image that is no VM's disk")


class ImageList(Out):
    """The files of the hypervisor's images directory, as a new VM may start on them."""

    images: list[ImageFile]


# --- admin: VMs and operations ------------------------------------------------------------------


class OperationSummary(Out):
    id: int
    kind: str
    vm_id: int | None
    vm_ids: list[int]
    hypervisor_id: int | None
    state: Literal["pending", "running", "succeeded", "failed", "interrupted"]
    progress: float
    message: str
    error: str
    created_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


def _vm_fields() -> dict[str, Any]:
    """The VM record's own fields (``app.vms.records.Vm``), as its JSON summary shows them."""
    hints = typing.get_type_hints(Vm)
    fields: dict[str, Any] = {field.name: (hints[field.name], ...) for field in dataclasses.fields(Vm)}
    fields["boot_order"] = (list[str], Field(description="boot devices in order"))
    return fields


class GuestInfo(Out):
    """What the guest's QEMU agent reports."""

    os_name: str
    addresses: list[str] = Field(description="address/prefix of each interface, loopback left out")


_GUEST: Any = (GuestInfo | None, Field(description="what the guest agent reports; null without an agent"))
VmSummary = create_model("VmSummary", __base__=Out, __doc__="A VM.", **_vm_fields())
VmListed = create_model(
    "VmListed", __base__=VmSummary, __doc__="A VM and what its guest agent reports.", guest=_GUEST
)
VmDetail = create_model(
    "VmDetail",
    __base__=VmSummary,
    __doc__="A VM with its thumbnail version, guest agent report and current operation.",
    guest=_GUEST,
    thumbnail=(int | None, Field(description="version of the latest screenshot, if any")),
    operation=(OperationSummary | None, ...),
)


class VmAnswer(Out):
    """The VM."""

    vm: VmDetail  # type: ignore[valid-type]


class VmInventory(Out):
    """VMs, with what their guest agents report."""

    vms: list[VmListed]  # type: ignore[valid-type]


class OptionOnDomain(Out):
    ok: bool
    reason: str = Field(description="why not, when not")


class HypervisorOffers(Out):
    """Per option (UEFI, Secure Boot, TPM, CPU modes) and domain type: whether VMs here can have it."""

    domain_types: list[Literal["kvm", "qemu"]] = Field(description="the domain types this hypervisor runs")
    labels: dict[str, str]
    options: dict[str, dict[str, OptionOnDomain]]


class VmChanged(Out):
    """The VM as it is now."""

    vm: VmSummary  # type: ignore[valid-type]


class VmList(Out):
    """VMs."""

    vms: list[VmSummary]  # type: ignore[valid-type]


class VmPowered(Out):
    """The action started."""

    vm: VmSummary  # type: ignore[valid-type]
    action: str


class VmsCreated(Out):
    """The VMs made (201), or being made by the operation (202)."""

    vms: list[VmSummary]  # type: ignore[valid-type]
    operation: OperationSummary | None


class OperationAnswer(Out):
    """The operation."""

    operation: OperationSummary | None


class OperationList(Out):
    """Recent operations, newest first."""

    operations: list[OperationSummary]


class DeletePlan(Out):
    vms: list[str]
    files: list[str]
    kept_files: list[str]
    state_files: list[str] = Field(description="UEFI variable stores and TPM state removed with the VMs")


class DeletePlanAnswer(Out):
    """What the deletion would destroy: confirm exactly these names and files."""

    plan: DeletePlan


class Deleted(Out):
    """What was deleted (200), or is being deleted by the operation (202)."""

    deleted: DeletePlan
    operation: OperationSummary | None


# --- admin: the VM table at fleet size ----------------------------------------------------------


class VmIdList(Out):
    """Ids of every VM matching the filters."""

    ids: list[int]


class RefusedVm(Out):
    name: str
    reason: str


class BulkPlan(Out):
    vms: list[str]
    files: list[str]
    kept_files: list[str]
    state_files: list[str] = Field(default=[], description="UEFI variable stores and TPM state")
    refused: list[RefusedVm] = Field(description="chosen VMs that cannot be deleted, and why")


class BulkPlanAnswer(Out):
    """What deleting the chosen VMs would destroy: confirm exactly these names and files."""

    plan: BulkPlan


class BulkDeleted(Out):
    """What is being deleted by the operation."""

    deleted: BulkPlan
    operation: OperationSummary | None


class VmTableViewRecord(Out):
    collapsed: list[int] = Field(description="initial machines whose children are folded")
    density: Literal["compact", "comfortable"]
    per_page: int


class VmTableViewAnswer(Out):
    """How the signed-in administrator sees the VM table."""

    view: VmTableViewRecord
