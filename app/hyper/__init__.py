"""The only code that talks to hypervisors.

``HypervisorRegistry`` keeps one connection per configured hypervisor (libvirt
over pinned-key ``qemu+ssh`` plus asyncssh for commands, or local/test
transports), watches it, fences it when it stays unreachable, and hands out
:class:`Hypervisor` objects whose methods do the domain and disk operations.
See docs/architecture.md, "Hypervisor layer contract".
"""

from app.hyper.commands import CommandResult
from app.hyper.disks import DiskFile
from app.hyper.domains import DomainInfo
from app.hyper.errors import (
    CommandError,
    DomainNotFound,
    HypervisorError,
    HypervisorNotFound,
    HypervisorUnavailable,
    InvalidDomainState,
    NotSupported,
    PathNotAllowed,
    SnapshotNotFound,
)
from app.hyper.events import ConnectionEvent, DomainEvent
from app.hyper.graphics import SpiceEndpoint
from app.hyper.hypervisor import Hypervisor
from app.hyper.probe import ProbeResult, probe
from app.hyper.records import HypervisorRecord
from app.hyper.registry import HypervisorRegistry
from app.hyper.snapshots import SnapshotInfo

__all__ = [
    "CommandError",
    "CommandResult",
    "ConnectionEvent",
    "DiskFile",
    "DomainEvent",
    "DomainInfo",
    "DomainNotFound",
    "Hypervisor",
    "HypervisorError",
    "HypervisorNotFound",
    "HypervisorRecord",
    "HypervisorRegistry",
    "HypervisorUnavailable",
    "InvalidDomainState",
    "NotSupported",
    "PathNotAllowed",
    "ProbeResult",
    "SnapshotInfo",
    "SnapshotNotFound",
    "SpiceEndpoint",
    "probe",
]
