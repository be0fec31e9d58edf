"""Words for states the product shows everywhere (VM states, operation states), translated when shown."""

from __future__ import annotations

from app.i18n.context import N_, gettext

VM_STATES = {
    "running": N_("running"),
    "paused": N_("paused"),
    "pmsuspended": N_("suspended"),
    "shutoff": N_("shut off"),
    "shutdown": N_("shutting down"),
    "crashed": N_("crashed"),
    "blocked": N_("blocked"),
    "missing": N_("not defined"),
    "undefined": N_("not defined"),
    "unknown": N_("unknown"),
}
OPERATION_STATES = {
    "pending": N_("pending"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "failed": N_("failed"),
    "interrupted": N_("interrupted"),
}
VM_KINDS = {
    "simple": N_("simple"),
    "source": N_("source"),
    "initial": N_("initial"),
    "vdi": N_("VDI"),
    "unclassified": N_("unclassified"),
}
HYPERVISOR_STATES = {"up": N_("Up"), "down": N_("Down"), "unknown": N_("Unknown")}


def state_label(state: str) -> str:
    """A VM's state as the reader's language says it (an unknown word is shown as it is)."""
    return gettext(VM_STATES[state]) if state in VM_STATES else state


def operation_state_label(state: str) -> str:
    return gettext(OPERATION_STATES[state]) if state in OPERATION_STATES else state


def hypervisor_state_label(state: str) -> str:
    return gettext(HYPERVISOR_STATES[state]) if state in HYPERVISOR_STATES else state


def kind_label(kind: str) -> str:
    """A VM's kind (simple, source, initial, VDI, unclassified) in the reader's language."""
    return gettext(VM_KINDS[kind]) if kind in VM_KINDS else kind
