"""VM parameters: what an admin types, validated, and where things may go.

pydantic models check the create forms and the JSON API (every error names its
field). Checks that need the hypervisor (the disk must live under its images
directory, the ISO must be one it offers) are in :func:`check_placement`.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from app.api.fields import errors_of
from app.hyper.records import HypervisorRecord
from app.i18n import gettext as _
from app.vms.devices.cpu import CpuMode
from app.vms.devices.disks import DiskBus, DiskCache, Machine
from app.vms.devices.network import NetworkType, NicModel
from app.vms.devices.sound import SoundModel
from app.vms.devices.usb import MAX_REDIRECTIONS
from app.vms.devices.video import MAX_HEADS

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Linux interface names: at most 15 characters, no slash or whitespace.
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
# libvirt network names: letters, digits and a few punctuation marks.
NETWORK_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
BootDevice = Literal["hd", "cdrom", "cdrom2", "network"]
OsType = Literal["linux", "windows", "other"]

M = TypeVar("M", bound=BaseModel)

VmName = Annotated[str, StringConstraints(strip_whitespace=True)]


class DefinitionError(ValueError):
    """Bad parameters: ``errors`` maps each field to a message saying what to do."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


def check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError("use 1 to 64 letters, digits, '-' or '_'")
    return value


def _default_boot() -> list[BootDevice]:
    return ["hd"]


class Hardware(BaseModel):
    """What every new VM is made of (the create forms and the JSON API share it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    vcpu_sockets: int = Field(1, ge=1, le=16)
    vcpu_cores: int = Field(1, ge=1, le=64)
    memory_mib: int = Field(1024, ge=32, le=4 * 1024 * 1024)
    disk_size_gib: int = Field(20, ge=1, le=64 * 1024)
    iso_path: str | None = None
    iso2_path: str | None = None
    # Before network (a bridge name is checked by the kind), and network before boot_order.
    network_type: NetworkType = "bridge"
    nic_model: NicModel = "virtio"
    network: str | None = None
    boot_order: list[BootDevice] = Field(default_factory=_default_boot, min_length=1, max_length=4)
    os_type: OsType = "linux"
    machine: Machine = "pc"
    firmware: Literal["bios", "uefi"] = "bios"
    secure_boot: bool = False
    tpm: bool = False
    cpu_mode: CpuMode = "default"
    disk_bus: DiskBus = "virtio"
    disk_cache: DiskCache = "default"
    sound_model: SoundModel = "none"
    video_heads: int = Field(1, ge=1, le=MAX_HEADS)
    clipboard: bool = False
    file_transfer: bool = False
    usb_redirect: int = Field(0, ge=0, le=MAX_REDIRECTIONS)

    @field_validator("iso_path", "iso2_path", "network", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("network")
    @classmethod
    def _network_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("network_type", "bridge") == "bridge":
            if not BRIDGE_RE.fullmatch(value):
                raise ValueError("a bridge name is 1 to 15 letters, digits, '.', ':', '-' or '_'")
        elif not NETWORK_RE.fullmatch(value):
            raise ValueError("a libvirt network name is letters, digits, '.', ':', '-' or '_'")
        return value

    @field_validator("secure_boot")
    @classmethod
    def _secure_boot(cls, value: bool, info: ValidationInfo) -> bool:
        # Only against values that were valid themselves (a bad one is named on its own).
        if value and "firmware" in info.data and info.data["firmware"] != "uefi":
            raise ValueError("Secure Boot needs UEFI firmware: choose UEFI")
        if value and "machine" in info.data and info.data["machine"] != "q35":
            raise ValueError("Secure Boot needs the q35 machine type")
        return value

    @field_validator("boot_order")
    @classmethod
    def _boot(cls, value: list[BootDevice], info: ValidationInfo) -> list[BootDevice]:
        if len(set(value)) != len(value):
            raise ValueError("name each boot device once")
        if "network" in value and "network" in info.data and info.data["network"] is None:
            raise ValueError("network boot needs a network: choose a bridge or remove 'network'")
        return value

    @field_validator("iso_path", "iso2_path")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\x00" in value):
            raise ValueError(_("choose an ISO from the hypervisor's list"))
        return value


class NewVm(Hardware):
    """A simple or source VM with its own new disk."""

    name: VmName
    kind: Literal["simple", "source"] = "simple"
    hypervisor_id: int = Field(ge=1)
    # Empty: <images_dir>/<name>.qcow2.
    disk_path: str | None = None
    # An existing image in the hypervisor's images directory to use as the disk (no new disk),
    # in place or, with ``import_copy``, copied to ``disk_path`` as a standalone qcow2.
    import_path: str | None = None
    import_copy: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("disk_path", "import_path", mode="before")
    @classmethod
    def _blank_disk(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\x00" in value):
            raise ValueError("choose an image from the hypervisor's images directory")
        return value


class NewBatch(Hardware):
    """``count`` VMs named ``prefix01`` .. ``prefixNN`` (simple or source)."""

    prefix: VmName
    count: int = Field(ge=1, le=500)
    kind: Literal["simple", "source"] = "simple"
    hypervisor_id: int = Field(ge=1)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_name(value)

    def names(self) -> list[str]:
        return batch_names(self.prefix, self.count)


class NewInitial(BaseModel):
    """An initial machine: a copy of a source VM's disk, VDI children hang below it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: VmName
    source_id: int = Field(ge=1)
    # Defaults to the source's hardware.
    memory_mib: int | None = Field(None, ge=32, le=4 * 1024 * 1024)
    vcpu_sockets: int | None = Field(None, ge=1, le=16)
    vcpu_cores: int | None = Field(None, ge=1, le=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)


class VdiBatch(BaseModel):
    """``count`` VDI VMs named ``prefix01`` ..; the initial machine is given apart (URL or form)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prefix: VmName
    count: int = Field(ge=1, le=500)
    volatile: bool = False

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_name(value)

    def names(self) -> list[str]:
        return batch_names(self.prefix, self.count)


class NewVdi(VdiBatch):
    """``count`` VDI VMs (qcow2 overlays) on an initial machine."""

    initial_id: int = Field(ge=1)


def batch_names(prefix: str, count: int) -> list[str]:
    """Zero-padded names: ``desk`` and 3 give desk01, desk02, desk03 (at least two digits)."""
    width = max(2, len(str(count)))
    names = [f"{prefix}{index:0{width}d}" for index in range(1, count + 1)]
    if len(names[-1]) > 64:
        message = _("too long for {count} machines: names must stay within 64 characters").format(count=count)
        raise DefinitionError({"prefix": message})
    return names


def parse(model: type[M], data: dict[str, Any], *, strict: bool = False) -> M:
    """Validate ``data``; raise :class:`DefinitionError` naming each bad field.

    Forms submit text (``strict=False`` converts it); JSON bodies are validated strictly.
    """
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise DefinitionError(errors_of(exc)) from None


def under_directory(path: str, directory: str) -> bool:
    """``path`` is a normalised absolute path strictly inside ``directory``."""
    if not path.startswith("/") or "\x00" in path:
        return False
    normal = posixpath.normpath(path)
    root = posixpath.normpath(directory)
    return normal == path and normal.startswith(root.rstrip("/") + "/")


def default_disk_path(images_dir: str, name: str) -> str:
    return posixpath.join(images_dir, f"{name}.qcow2")


def volatile_overlay_path(volatile_dir: str, name: str) -> str:
    return posixpath.join(volatile_dir, f"{name}.volatile.qcow2")


def spice_listen_of(record: HypervisorRecord) -> str:
    """Where a VM's SPICE display listens: the hypervisor's console network address."""
    return record.console_address


def check_placement(
    *, disk_path: str, images_dir: str, iso_path: str | None, isos: list[str] | None
) -> dict[str, str]:
    """Errors for a disk outside the images directory or an ISO the hypervisor does not offer."""
    errors: dict[str, str] = {}
    if not disk_path.endswith(".qcow2") or not under_directory(disk_path, images_dir):
        errors["disk_path"] = _("put the disk under {directory}/ and name it *.qcow2").format(
            directory=images_dir
        )
    if iso_path is not None and isos is not None and iso_path not in isos:
        errors["iso_path"] = _("choose an ISO from the hypervisor's list")
    return errors
