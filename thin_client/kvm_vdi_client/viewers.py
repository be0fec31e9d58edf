"""Starting the desktop viewers: remote-viewer (SPICE), xfreerdp (RDP failover), vmware-view (Horizon).

Secrets go to the viewer on stdin, never in argv (argv is world-readable in
/proc): remote-viewer reads the whole ``.vv`` from stdin (``-``), xfreerdp reads
the password with ``/from-stdin:force`` and asks nothing else there (``/cert:deny``,
see :mod:`kvm_vdi_client.rdp`). vmware-view gets no password at all and
asks for it in its own window.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from kvm_vdi_client.config import ViewerConfig
from kvm_vdi_client.i18n import N_
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.model import HorizonFailover, RdpFailover, SpiceConnection
from kvm_vdi_client.rdp import certificate_argument
from kvm_vdi_client.vv import build_vv

log = logging.getLogger(__name__)


class ViewerNotInstalled(RuntimeError):
    pass


class ViewerStartFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ViewerLaunch:
    """What to run: a display name for messages, the argument vector, and the secret stdin."""

    label: str
    package: str
    argv: tuple[str, ...]
    stdin: bytes = field(repr=False, default=b"")


def spice_launch(config: ViewerConfig, connection: SpiceConnection) -> ViewerLaunch:
    if config.kiosk:
        # The viewer quits when the desktop goes away, which hands control back to the launcher.
        mode: tuple[str, ...] = ("--kiosk", "--kiosk-quit", "on-disconnect")
    elif config.fullscreen:
        mode = ("--full-screen",)
    else:
        mode = ()
    vv = build_vv(
        connection,
        fullscreen=config.kiosk or config.fullscreen,
        usb_redirect=config.usb_redirect,
        hotkeys=config.hotkeys,
    )
    return ViewerLaunch(
        label=N_("SPICE viewer (remote-viewer)"),
        package="virt-viewer",
        argv=(config.spice_command, *mode, "-"),
        stdin=vv.encode(),
    )


def rdp_launch(config: ViewerConfig, failover: RdpFailover, username: str, password: str) -> ViewerLaunch:
    argv = [config.rdp_command, "/f", f"/v:{failover.host}"]
    if failover.domain:
        argv.append(f"/d:{failover.domain}")
    argv += [f"/u:{username}", "/from-stdin:force"]
    if not any(arg.lower().startswith(("/cert", "-cert", "+cert")) for arg in config.rdp_args):
        # Never a certificate question on stdin (it carries the password and then ends).
        argv.append(certificate_argument(config.rdp_certificates))
    argv += config.rdp_args
    return ViewerLaunch(
        label=N_("RDP viewer (xfreerdp)"),
        package="freerdp2-x11",
        argv=tuple(argv),
        stdin=(password + "\n").encode(),
    )


def horizon_launch(config: ViewerConfig, failover: HorizonFailover, username: str) -> ViewerLaunch:
    argv = [
        config.horizon_command,
        f"--serverURL={failover.server}",
        f"--userName={username}",
        "--fullscreen",
    ]
    if failover.pool:
        argv.append(f"--desktopName={failover.pool}")
    if config.kiosk:
        # No error dialogs on a kiosk: the launcher reports a failed exit itself.
        argv.append("--nonInteractive")
    return ViewerLaunch(
        label=N_("Horizon client (vmware-view)"), package="VMware Horizon Client", argv=tuple(argv)
    )


class ViewerProcess:
    """A running viewer; ``wait()`` blocks until it exits (called on a watcher thread)."""

    def __init__(self, launch: ViewerLaunch, process: subprocess.Popen[bytes]) -> None:
        self.launch = launch
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        return self.process.wait()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_viewer(launch: ViewerLaunch, *, env: dict[str, str] | None = None) -> ViewerProcess:
    program = launch.argv[0]
    resolved = shutil.which(program, path=(env or os.environ).get("PATH"))
    if resolved is None:
        raise ViewerNotInstalled(
            _(
                "The {viewer} is not installed on this thin client (program {program!r} not found; install "
                "{package})."
            ).format(viewer=_(launch.label), program=program, package=launch.package)
        )
    log.info("starting %s: %s", launch.label, " ".join(launch.argv))
    try:
        process = subprocess.Popen(
            [resolved, *launch.argv[1:]],
            stdin=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
    except OSError as error:
        raise ViewerStartFailed(
            _("The {viewer} could not be started: {error}.").format(
                viewer=_(launch.label), error=error.strerror or error
            )
        ) from None
    assert process.stdin is not None
    try:
        process.stdin.write(launch.stdin)
        process.stdin.close()
    except BrokenPipeError:
        # The viewer exited before reading; its exit code tells the rest.
        log.warning("%s closed its input before reading the connection details", launch.label)
    return ViewerProcess(launch, process)
