"""What can go wrong when talking to a hypervisor, as exceptions callers can tell apart."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class HypervisorError(Exception):
    """A hypervisor refused or failed an operation; the message is fit for an admin."""


class HypervisorUnavailable(HypervisorError):
    """The hypervisor is down, fenced, not connected (yet) or unknown: nothing can be done there now."""


class HypervisorNotFound(HypervisorUnavailable):
    """No hypervisor with that id is configured."""


class DomainNotFound(HypervisorError):
    """The hypervisor has no domain of that name."""


class SnapshotNotFound(HypervisorError):
    """The domain has no snapshot of that name."""


class InvalidDomainState(HypervisorError):
    """The domain is not in a state that allows the operation (e.g. a screenshot of a shut-off VM)."""


class NotSupported(HypervisorError):
    """The hypervisor's libvirt driver cannot do this at all (e.g. a live CD-ROM change on some drivers)."""


class NoSpiceDisplay(HypervisorError):
    """The running domain has no SPICE display the dashboard may use (none, no port, or only a plain
    port where plain SPICE is not allowed): its definition or its hypervisor's record must change."""


class DirectoryMissing(HypervisorError):
    """A directory the hypervisor's record names does not exist there (yet)."""


class PathNotAllowed(HypervisorError):
    """A path outside the hypervisor's images, volatile and ISO directories (or not normalized)."""


class CommandError(HypervisorError):
    """A command on the hypervisor exited non-zero, was killed or timed out."""

    def __init__(
        self, argv: Sequence[str], exit_status: int | None, stderr: str, *, reason: str = ""
    ) -> None:
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        detail = reason or _last_line(stderr) or "no error output"
        status = "killed" if exit_status is None else f"exit status {exit_status}"
        super().__init__(f"{self.argv[0] if self.argv else 'command'} failed ({status}): {detail}")

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)


class CommandCutOff(CommandError, HypervisorUnavailable):
    """The connection to the hypervisor was lost while a command ran: its outcome is unknown."""

    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(argv, None, "", reason=detail)
        self.args = (f"{self.argv[0] if self.argv else 'the command'} was cut off: {detail}",)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
