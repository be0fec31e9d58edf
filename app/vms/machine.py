"""Where a VM's machine runs: the domain type (KVM or TCG) and firmware image for what it needs.

KVM first, then emulation (TCG); when neither runs the machine the refusal names
every reason (see :mod:`app.hyper.placement` for how each is found out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.hyper import Hypervisor, HypervisorError
from app.hyper.capabilities import FirmwareImage
from app.hyper.placement import LABELS, MachineNeeds, why_not
from app.hyper.placement import offers as hyper_offers
from app.i18n import gettext as _
from app.vms.errors import HypervisorFailure, Invalid

__all__ = ["MachineNeeds", "Placement", "offers", "place"]


@dataclass(frozen=True)
class Placement:
    domain_type: str
    firmware: FirmwareImage | None = None
    # Why a faster domain type was passed over, for the admin ("" when KVM runs it).
    note: str = ""


def _check_combination(needs: MachineNeeds) -> None:
    if needs.secure_boot and needs.firmware != "uefi":
        raise Invalid({"secure_boot": _("Secure Boot needs UEFI firmware: choose UEFI")})
    if needs.secure_boot and needs.machine != "q35":
        raise Invalid({"secure_boot": _("Secure Boot needs the q35 machine type")})


async def place(hv: Hypervisor, needs: MachineNeeds, forced: str = "auto") -> Placement:
    """The domain type (and firmware) ``needs`` runs with on ``hv``; :class:`Invalid` if none."""
    _check_combination(needs)
    candidates = (forced,) if forced in ("kvm", "qemu") else ("kvm", "qemu")
    try:
        return await _place(hv, needs, candidates)
    except HypervisorError as exc:
        raise HypervisorFailure(
            _("reading what {name} can run failed: {exc}").format(name=hv.name, exc=exc)
        ) from exc


async def _place(hv: Hypervisor, needs: MachineNeeds, candidates: tuple[str, ...]) -> Placement:
    if needs.plain:
        # Every host runs these: KVM where it offers it (one capabilities call), else TCG.
        if len(candidates) == 1:
            return Placement(candidates[0])
        return Placement("kvm" if await hv.supports_kvm() else "qemu")
    caps = await hv.capabilities()
    reasons: list[str] = []
    for domain_type in candidates:
        reason, image = await why_not(hv, caps, domain_type, needs)
        if reason is None:
            note = "; ".join(reasons)
            return Placement(domain_type, image, f"{LABELS['kvm']} cannot: {note}" if note else "")
        reasons.append(f"{LABELS[domain_type]}: {reason}")
    field = _field_of(needs)
    raise Invalid(
        {
            field: _("{name} cannot run this machine. {reasons}").format(
                name=hv.name, reasons="; ".join(reasons)
            )
        }
    )


def _field_of(needs: MachineNeeds) -> str:
    if needs.cpu_mode != "default":
        return "cpu_mode"
    if needs.tpm and needs.firmware == "bios":
        return "tpm"
    if needs.secure_boot:
        return "secure_boot"
    return "firmware"


async def offers(hv: Hypervisor, forced: str = "auto") -> dict[str, Any]:
    """For the VM form: per option, per domain type, whether it runs on ``hv`` and why not."""
    try:
        return await hyper_offers(hv, forced)
    except HypervisorError as exc:
        raise HypervisorFailure(
            _("reading what {name} can run failed: {exc}").format(name=hv.name, exc=exc)
        ) from exc
