"""``kvm-vdi-client``: read the configuration, then run the full-screen launcher."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tkinter as tk
from pathlib import Path
from types import FrameType

from kvm_vdi_client import __version__
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import (
    DEFAULT_CONFIG_PATH,
    ClientConfig,
    ConfigError,
    load_config,
    read_kiosk_password,
)
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Started
from kvm_vdi_client.i18n import N_, set_language
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.logsetup import configure_logging
from kvm_vdi_client.machine import Credentials, SessionMachine
from kvm_vdi_client.ui import LauncherWindow

# What ``--help`` says the program does.
DESCRIPTION = N_("Read the configuration, then run the full-screen launcher.")

log = logging.getLogger("kvm_vdi_client")


def build_controller(config: ClientConfig, *, viewer_env: dict[str, str] | None = None) -> Controller:
    """Wire the launcher's parts; raises ConfigError for an unusable kiosk password file."""
    auto_login = None
    if config.kiosk.username is not None and config.kiosk.password_file is not None:
        auto_login = Credentials(config.kiosk.username, read_kiosk_password(config.kiosk.password_file))
    # A kiosk viewer that lost its desktop comes back by itself; a windowed one asks first
    # (closing its window cannot be told apart from a lost connection).
    machine = SessionMachine(
        booting=config.booting, kiosk=config.kiosk, auto_login=auto_login, reconnect=config.viewer.kiosk
    )
    return Controller(machine, BrokerClient(config.dashboard), config.viewer, viewer_env=viewer_env)


def _show_fatal(message: str) -> None:
    """On a kiosk nobody reads stderr: put a configuration error on the screen too."""
    print(f"kvm-vdi-client: {message}", file=sys.stderr)
    if not os.environ.get("DISPLAY"):
        return
    try:
        root = tk.Tk()
    except tk.TclError:
        return
    root.title(_("Thin client configuration error"))
    root.attributes("-fullscreen", True)
    root.configure(background="#1f2a36")
    tk.Label(
        root,
        text=_(
            "This thin client is not configured correctly.\n\n{message}\n\nAsk your administrator."
        ).format(message=message),
        background="#1f2a36",
        foreground="#ff9b9b",
        font=("DejaVu Sans", 16),
        wraplength=900,
        justify="left",
    ).place(relx=0.5, rely=0.4, anchor="center")
    root.mainloop()


def main(argv: list[str] | None = None) -> int:
    # The environment's language until the configuration (which may name one) is read.
    set_language(None)
    parser = argparse.ArgumentParser(prog="kvm-vdi-client", description=_(DESCRIPTION))
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("KVM_VDI_CLIENT_CONFIG", DEFAULT_CONFIG_PATH)),
        help=_("configuration file (default {path}, or {variable})").format(
            path=DEFAULT_CONFIG_PATH, variable="$KVM_VDI_CLIENT_CONFIG"
        ),
    )
    parser.add_argument("--check", action="store_true", help=_("validate the configuration and exit"))
    parser.add_argument("--version", action="version", version=f"kvm-vdi-client {__version__}")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
        set_language(config.ui.language)
        configure_logging(config.logging)
        controller = build_controller(config)
    except ConfigError as error:
        if args.check:
            print(f"kvm-vdi-client: {error}", file=sys.stderr)
        else:
            _show_fatal(str(error))
        return 2
    if args.check:
        print(_("{config}: configuration is valid").format(config=args.config))
        return 0

    log.info("kvm-vdi-client %s starting; dashboard %s", __version__, config.dashboard.url)
    try:
        root = tk.Tk()
    except tk.TclError as error:
        print(_("kvm-vdi-client: cannot open the display: {error}").format(error=error), file=sys.stderr)
        return 1
    window = LauncherWindow(root, controller, config.ui)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: closing", signum)
        root.after(0, root.quit)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    controller.dispatch(Started())
    window.start()
    try:
        root.mainloop()
    finally:
        controller.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
