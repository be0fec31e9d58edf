"""The request bodies of every JSON endpoint, declared once, by area.

Each is a pydantic model that :func:`app.api.reader.read_body` validates in strict
mode with unknown fields forbidden: a string is never taken for a number, nor
``"maybe"`` for a boolean, and a field the endpoint does not use is refused rather
than dropped. Domain rules that need the database or a hypervisor stay with the
domain code; these models fix the shape and the types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.broker.power import USER_ACTIONS
from app.inventory.hypervisors import DEFAULTS as HV_DEFAULTS
from app.inventory.hypervisors import LABELS as HV_LABELS
from app.vms.bulk import MAX_SELECTION
from app.vms.devices.usb import MAX_REDIRECTIONS
from app.vms.parameters import NewBatch, NewInitial, NewVdi, NewVm, VdiBatch
from app.vms.power import PowerAction


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


Text = Annotated[StrictStr, Field(max_length=1024)]
Id = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]

# --- broker API and client portal (``/api/v1``, ``/client``) -----------------------------------

UserAction = Literal["shutdown", "poweroff", "reboot", "start"]
assert set(get_args(UserAction)) == set(USER_ACTIONS), "UserAction and USER_ACTIONS must agree"


class Login(Body):
    username: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    password: Annotated[StrictStr, Field(min_length=1, max_length=4096)]
    # "local" or "directory"; absent: the realm rule of app.broker.clients decides.
    realm: Annotated[StrictStr, Field(max_length=32)] | None = None


class DesktopRequest(Body):
    # True: another desktop of the pool, even when the user holds one already.
    new: StrictBool = False


class UserPower(Body):
    action: UserAction


class SnapshotTake(Body):
    # Absent: snap-<date>-<time>. The rule for names is the VM service's (app.vms.snapshots).
    name: Annotated[StrictStr, Field(max_length=64)] | None = None
    description: Annotated[StrictStr, Field(max_length=255)] = ""


# --- admin hypervisor API (``/api/v1/admin/hypervisors``) -------------------------------------


class HypervisorFields(Body):
    """A hypervisor record as the API takes it; PATCH sends only what changes.

    The defaults are the forms' (``HV_DEFAULTS``); the rules that read
    several fields (address required over SSH, URI schemes per transport) are
    :func:`app.inventory.hypervisors.validate`, shared with the forms.
    """

    name: Text = HV_DEFAULTS["name"]
    transport: Literal["ssh", "local", "test"] = HV_DEFAULTS["transport"]
    address: Text = HV_DEFAULTS["address"]
    ssh_port: Annotated[StrictInt, Field(ge=1, le=65535)] = HV_DEFAULTS["ssh_port"]
    ssh_user: Text = HV_DEFAULTS["ssh_user"]
    # Only for the local and test transports: SSH hypervisors derive theirs.
    libvirt_uri: Text | None = None
    spice_address: Text = HV_DEFAULTS["spice_address"]
    images_dir: Text = HV_DEFAULTS["images_dir"]
    volatile_dir: Text = HV_DEFAULTS["volatile_dir"]
    iso_dir: Text = HV_DEFAULTS["iso_dir"]
    maintenance: StrictBool = HV_DEFAULTS["maintenance"]

    field_labels: ClassVar[Mapping[str, str]] = HV_LABELS

    def sent(self) -> dict[str, Any]:
        """The fields the request named (PATCH changes only these)."""
        return self.model_dump(include=self.model_fields_set)

    def refusals(self, transport: str) -> dict[str, str]:
        """Fields sent that the record's transport does not use (refused, never silently dropped)."""
        if transport == "ssh" and self.libvirt_uri:
            return {
                "libvirt_uri": "libvirt URI: not used for the ssh transport (it is derived from "
                "address, port and user): leave it out"
            }
        return {}


class HostKeyConfirmation(Body):
    fingerprint: Annotated[StrictStr, Field(pattern=r"^SHA256:[A-Za-z0-9+/=]{1,100}$")]


# --- admin VM API (``/api/v1/admin/vms``) -----------------------------------------------------
# The create models are the forms' own (app.vms.parameters), validated strictly here.


class NewVmBody(NewVm):
    model_config = ConfigDict(strict=True)


class NewBatchBody(NewBatch):
    model_config = ConfigDict(strict=True)


class NewInitialBody(NewInitial):
    model_config = ConfigDict(strict=True)


class NewVdiBody(VdiBatch):
    model_config = ConfigDict(strict=True)

    def on(self, initial_id: int) -> NewVdi:
        """The VDI machines to make on the initial machine named by the URL."""
        return NewVdi(initial_id=initial_id, **self.model_dump())


def new_vm_model(data: dict[str, Any]) -> type[NewVmBody] | type[NewBatchBody]:
    """One VM (``name``) or a batch (``prefix`` + ``count``)."""
    return NewBatchBody if "prefix" in data or "count" in data else NewVmBody


class Populate(Body):
    wait_first_boot: StrictBool = False
    # Seconds a first boot may take (default: vms.first_boot_timeout); only with wait_first_boot.
    first_boot_timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None

    @field_validator("first_boot_timeout")
    @classmethod
    def _timeout_needs_wait(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not info.data.get("wait_first_boot"):
            raise ValueError("only with wait_first_boot: true")
        return value


class VmPower(Body):
    action: PowerAction


class StartConfirmed(VmPower):
    # Starting an initial machine whose own disk VDI machines run on: exactly those machines,
    # as the refusal (children_depend) named them; they are forced off and put in maintenance.
    confirm_children: list[Text] | None = None


class Publish(Body):
    origin: Literal["source", "initial"] = "source"
    # A running initial is shut down first (ACPI, then forced) instead of refused.
    shutdown: StrictBool = False
    note: Annotated[StrictStr, Field(max_length=255)] = ""


class PublishRunning(Body):
    # Shares the version's 255 characters with the note saying how consistent the copy is.
    note: Annotated[StrictStr, Field(max_length=160)] = ""


class VersionTarget(Body):
    version_id: Id


class VersionDelete(Body):
    # Exactly the files of the plan (GET .../versions/{id}/delete-plan) the admin confirmed.
    confirm_files: list[Text]


class Flags(Body):
    maintenance: StrictBool | None = None
    locked: StrictBool | None = None
    volatile: StrictBool | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Flags:
        if not self.changes():
            raise ValueError("name at least one flag: maintenance, locked or volatile")
        return self

    def changes(self) -> dict[str, bool]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


class Classify(Body):
    kind: Annotated[StrictStr, Field(max_length=32)]
    parent_id: Id | None = None


class Media(Body):
    # An ISO path from the hypervisor's list; null (or absent) ejects.
    iso_path: Text | None = None
    # CD-ROM drive 1 (the installer's) or 2 (e.g. a driver disc).
    drive: Literal[1, 2] = 1


class Policy(Body):
    """A VM's device policy (VMs in no pool): what its console clients may do."""

    clipboard: StrictBool | None = None
    file_transfer: StrictBool | None = None
    # USB devices a client may redirect; 0 turns redirection off.
    usb_redirect: Annotated[StrictInt, Field(ge=0, le=MAX_REDIRECTIONS)] | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Policy:
        if not self.changes():
            raise ValueError("name at least one of clipboard, file_transfer, usb_redirect")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


class FixedAddress(Body):
    """A VM's fixed IPv4 address in the DHCP export; null or "" removes it."""

    fixed_address: Annotated[StrictStr, Field(max_length=64)] | None


class Delete(Body):
    with_children: StrictBool = False
    remove_disks: StrictBool = False
    # Exactly the VM names and files of the plan (GET .../delete-plan) the admin confirmed.
    confirm_vms: list[Text]
    confirm_files: list[Text]


# --- the VM table: actions on many VMs, and the admin's own view of the table ------------------

VmIds = Annotated[list[Id], Field(min_length=1, max_length=MAX_SELECTION)]


class BulkPower(Body):
    vm_ids: VmIds
    action: PowerAction


class BulkMaintenance(Body):
    vm_ids: VmIds
    maintenance: StrictBool


class BulkDeletePlan(Body):
    vm_ids: VmIds
    remove_disks: StrictBool = False


class BulkDelete(Body):
    vm_ids: VmIds
    remove_disks: StrictBool = False
    # Exactly the VM names and files of the plan (POST .../bulk/delete-plan) the admin confirmed.
    confirm_vms: Annotated[list[Text], Field(max_length=MAX_SELECTION)]
    confirm_files: Annotated[list[Text], Field(max_length=MAX_SELECTION)]


class VmTableView(Body):
    """Changes to how the signed-in admin sees the VM table (each field optional)."""

    collapse: Annotated[list[Id], Field(max_length=1000)] = []
    expand: Annotated[list[Id], Field(max_length=1000)] = []
    density: Literal["compact", "comfortable"] | None = None
    per_page: Literal[50, 100, 250, 500] | None = None


# --- pool schedules ------------------------------------------------------------------------------

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TimeOfDay = Annotated[StrictStr, Field(pattern=r"^\d{1,2}:\d{2}$")]


class PoolSchedule(Body):
    kind: Literal["keep_ready", "power_off", "reset", "populate"]
    days: Annotated[list[DayName], Field(min_length=1, max_length=7)]
    at: TimeOfDay
    # Only for keep_ready: when the window closes (past midnight when before ``at``).
    until: TimeOfDay | None = None
    count: Annotated[StrictInt, Field(ge=0, le=10_000)] = 0
    enabled: StrictBool = True


class PoolScheduleChange(Body):
    enabled: StrictBool
