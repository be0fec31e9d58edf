"""Where a VM's machine can run: the domain type (KVM or TCG) and firmware image for what it needs.

A plain BIOS desktop runs with KVM wherever the host offers it. Anything more
(UEFI, Secure Boot, a TPM, the host's CPU model) is checked against the
hypervisor's domain capabilities and, where those can be wrong, a trial start
(:meth:`app.hyper.Hypervisor.trial`): KVM first, then emulation (TCG), and when
neither runs it the refusal names every reason. :func:`offers` gives the VM
form the same answers for each option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.hyper import Hypervisor, HypervisorError
from app.hyper.capabilities import FirmwareImage, HostCapabilities, pick_firmware
from app.vms.errors import HypervisorFailure, Invalid

LABELS = {"kvm": "KVM", "qemu": "emulation (TCG)"}


@dataclass(frozen=True)
class MachineNeeds:
    machine: str = "pc"
    firmware: str = "bios"
    secure_boot: bool = False
    tpm: bool = False
    cpu_mode: str = "default"

    @property
    def plain(self) -> bool:
        """Nothing beyond what every host runs: a BIOS machine, no TPM, the default CPU."""
        return self.firmware == "bios" and not self.tpm and self.cpu_mode == "default"


@dataclass(frozen=True)
class Placement:
    domain_type: str
    firmware: FirmwareImage | None = None
    # Why a faster domain type was passed over, for the admin ("" when KVM runs it).
    note: str = ""


async def _capabilities(hv: Hypervisor) -> HostCapabilities:
    try:
        return await hv.capabilities()
    except HypervisorError as exc:
        raise HypervisorFailure(f"reading the capabilities of {hv.name} failed: {exc}") from exc


async def _trial(hv: Hypervisor, domain_type: str, feature: str) -> str | None:
    """``None`` when the trial start worked, else what went wrong."""
    try:
        trial = await hv.trial(domain_type, feature)
    except HypervisorError as exc:
        raise HypervisorFailure(f"trying {feature} on {hv.name} failed: {exc}") from exc
    return None if trial.works else trial.detail or "it does not start"


async def why_not(
    hv: Hypervisor, caps: HostCapabilities, domain_type: str, needs: MachineNeeds
) -> tuple[str | None, FirmwareImage | None]:
    """(reason ``domain_type`` cannot run ``needs`` or None, the firmware image it would use)."""
    if domain_type not in caps.domain_types:
        return f"the host offers no {LABELS[domain_type]}", None
    described = caps.domains.get(domain_type)
    if described is None:
        return "libvirt does not describe this domain type", None
    image: FirmwareImage | None = None
    if needs.firmware == "uefi":
        if not described.efi:
            return "libvirt offers no UEFI firmware (install ovmf)", None
        if needs.secure_boot and not described.secure_loader:
            return "libvirt offers no Secure Boot loader", None
        image = pick_firmware(
            list(caps.firmware),
            machine=needs.machine,
            secure_boot=needs.secure_boot,
            loaders=described.loaders,
        )
        if image is None:
            kind = "Secure Boot " if needs.secure_boot else ""
            return f"no {kind}UEFI firmware image for the {needs.machine} machine (install ovmf)", None
        if image.requires_smm and (reason := await _trial(hv, domain_type, "smm")):
            return reason, None
        if reason := await _trial(hv, domain_type, "uefi"):
            return f"UEFI firmware does not run: {reason}", None
    if needs.tpm:
        if not (described.tpm_external and described.tpm_2):
            return "libvirt cannot attach an emulated TPM 2.0", None
        if not caps.swtpm:
            return "swtpm is not installed (apt install swtpm swtpm-tools)", None
    if needs.cpu_mode != "default":
        if needs.cpu_mode not in described.cpu_modes:
            return f"libvirt does not offer the {needs.cpu_mode} CPU mode", None
        if reason := await _trial(hv, domain_type, needs.cpu_mode):
            return f"{needs.cpu_mode} does not start: {reason}", None
    return None, image


def _check_combination(needs: MachineNeeds) -> None:
    if needs.secure_boot and needs.firmware != "uefi":
        raise Invalid({"secure_boot": "Secure Boot needs UEFI firmware: choose UEFI"})
    if needs.secure_boot and needs.machine != "q35":
        raise Invalid({"secure_boot": "Secure Boot needs the q35 machine type"})


async def place(hv: Hypervisor, needs: MachineNeeds, forced: str = "auto") -> Placement:
    """The domain type (and firmware) ``needs`` runs with on ``hv``; :class:`Invalid` if none."""
    _check_combination(needs)
    candidates = (forced,) if forced in ("kvm", "qemu") else ("kvm", "qemu")
    if needs.plain:
        caps_types = (await _capabilities(hv)).domain_types
        for domain_type in candidates:
            if domain_type in caps_types:
                return Placement(domain_type)
        raise Invalid({"hypervisor_id": f"{hv.name} runs neither KVM nor emulated guests"})
    caps = await _capabilities(hv)
    reasons: list[str] = []
    for domain_type in candidates:
        reason, image = await why_not(hv, caps, domain_type, needs)
        if reason is None:
            note = "; ".join(reasons)
            return Placement(domain_type, image, f"{LABELS['kvm']} cannot: {note}" if note else "")
        reasons.append(f"{LABELS[domain_type]}: {reason}")
    field = _field_of(needs)
    raise Invalid({field: f"{hv.name} cannot run this machine. " + "; ".join(reasons)})


def _field_of(needs: MachineNeeds) -> str:
    if needs.cpu_mode != "default":
        return "cpu_mode"
    if needs.tpm and needs.firmware == "bios":
        return "tpm"
    if needs.secure_boot:
        return "secure_boot"
    return "firmware"


# What the VM form asks about, and how each option maps to needs.
OPTIONS: dict[str, MachineNeeds] = {
    "uefi": MachineNeeds(machine="q35", firmware="uefi"),
    "secure_boot": MachineNeeds(machine="q35", firmware="uefi", secure_boot=True),
    "tpm": MachineNeeds(tpm=True),
    "host-model": MachineNeeds(cpu_mode="host-model"),
    "host-passthrough": MachineNeeds(cpu_mode="host-passthrough"),
}


async def offers(hv: Hypervisor, forced: str = "auto") -> dict[str, Any]:
    """For the VM form: per option, per domain type, whether it runs here and why not.

    ``{"domain_types": [...], "options": {"uefi": {"kvm": {"ok": false, "reason": ...},
    "qemu": {"ok": true, "reason": ""}}, ...}}``
    """
    caps = await _capabilities(hv)
    candidates = [dt for dt in ("kvm", "qemu") if forced in ("auto", dt)]
    options: dict[str, dict[str, dict[str, Any]]] = {}
    for option, needs in OPTIONS.items():
        options[option] = {}
        for domain_type in candidates:
            reason, _image = await why_not(hv, caps, domain_type, needs)
            options[option][domain_type] = {"ok": reason is None, "reason": reason or ""}
    return {
        "domain_types": [dt for dt in candidates if dt in caps.domain_types],
        "labels": LABELS,
        "options": options,
    }
