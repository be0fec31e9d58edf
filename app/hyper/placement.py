"""What a hypervisor can run, option by option: UEFI, Secure Boot, TPM 2.0, the host's CPU model.

A plain BIOS desktop runs with KVM wherever the host offers it. Anything more is
checked against the host's descriptions and, where those can be wrong, a trial
start (:mod:`app.hyper.trials`): :func:`why_not` says why a domain type cannot
run a machine, :func:`offers` answers it for every option (the VM form and
``kvm-vdi check`` show those answers). Works on a connected
:class:`~app.hyper.Hypervisor` or a probe's :class:`~app.hyper.features.HostFeatures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from app.hyper.capabilities import FirmwareImage, HostCapabilities, Trial, pick_firmware

LABELS = {"kvm": "KVM", "qemu": "emulation (TCG)"}


class FeatureSource(Protocol):
    async def capabilities(self) -> HostCapabilities: ...

    async def trial(self, domain_type: str, feature: str) -> Trial: ...


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


async def _trial(source: FeatureSource, domain_type: str, feature: str) -> str | None:
    """``None`` when the trial start worked, else what went wrong."""
    trial = await source.trial(domain_type, feature)
    return None if trial.works else trial.detail or "it does not start"


async def why_not(
    source: FeatureSource, caps: HostCapabilities, domain_type: str, needs: MachineNeeds
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
        if image.requires_smm and (reason := await _trial(source, domain_type, "smm")):
            return reason, None
        if reason := await _trial(source, domain_type, "uefi"):
            return f"UEFI firmware does not run: {reason}", None
    if needs.tpm:
        if not (described.tpm_external and described.tpm_2):
            return "libvirt cannot attach an emulated TPM 2.0", None
        if not caps.swtpm:
            return "swtpm is not installed (apt install swtpm swtpm-tools)", None
    if needs.cpu_mode != "default":
        if needs.cpu_mode not in described.cpu_modes:
            return f"libvirt does not offer the {needs.cpu_mode} CPU mode", None
        if reason := await _trial(source, domain_type, needs.cpu_mode):
            return f"{needs.cpu_mode} does not start: {reason}", None
    return None, image


# What the VM form asks about, and how each option maps to needs.
OPTIONS: dict[str, MachineNeeds] = {
    "uefi": MachineNeeds(machine="q35", firmware="uefi"),
    "secure_boot": MachineNeeds(machine="q35", firmware="uefi", secure_boot=True),
    "tpm": MachineNeeds(tpm=True),
    "host-model": MachineNeeds(cpu_mode="host-model"),
    "host-passthrough": MachineNeeds(cpu_mode="host-passthrough"),
}


async def offers(source: FeatureSource, forced: str = "auto") -> dict[str, Any]:
    """For the VM form: per option, per domain type, whether it runs here and why not.

    ``{"domain_types": [...], "options": {"uefi": {"kvm": {"ok": false, "reason": ...},
    "qemu": {"ok": true, "reason": ""}}, ...}}``
    """
    caps = await source.capabilities()
    candidates = [dt for dt in ("kvm", "qemu") if forced in ("auto", dt)]
    options: dict[str, dict[str, dict[str, Any]]] = {}
    for option, needs in OPTIONS.items():
        options[option] = {}
        for domain_type in candidates:
            reason, _image = await why_not(source, caps, domain_type, needs)
            options[option][domain_type] = {"ok": reason is None, "reason": reason or ""}
    return {
        "domain_types": [dt for dt in candidates if dt in caps.domain_types],
        "labels": LABELS,
        "options": options,
    }
