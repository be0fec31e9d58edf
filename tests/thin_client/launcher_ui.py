"""The launcher window in the test process, on an Xvfb display, driven with real key presses."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from kvm_vdi_client.config import UiConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Started
from kvm_vdi_client.ui import LauncherWindow

from tests.services.xvfb import Xvfb
from tests.waiting import NeverHappened, eventually, eventually_blocking

# A Tcl interpreter must be deleted by the thread that created it, or Tcl aborts the
# whole process ("Tcl_AsyncDelete: async handler deleted by the wrong thread"). Tk
# objects can outlive their test in reference cycles, which the garbage collector may
# then free from any thread (a libvirt worker of a later test): so the interpreters
# made here live until the test process ends, and are deleted by its main thread.
_INTERPRETERS: list[tk.Tk] = []


class Ui:
    """The launcher window in this process, on the Xvfb display, pumped by the test."""

    def __init__(self, xvfb: Xvfb, controller: Controller) -> None:
        self.xvfb = xvfb
        self.root = tk.Tk(screenName=xvfb.display)
        _INTERPRETERS.append(self.root)
        self.window = LauncherWindow(
            self.root, controller, UiConfig(fullscreen=True, title="Virtual desktop")
        )
        self.controller = controller
        self.window.start()
        controller.dispatch(Started())
        self.until(lambda: self.root.winfo_viewable() == 1, "window mapped")

    def pumped(self, condition: Callable[[], bool]) -> Callable[[], bool]:
        """``condition`` looked at after Tk has handled what arrived (the window runs in this thread)."""

        def check() -> bool:
            self.root.update()
            return condition()

        return check

    def until(self, condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
        try:
            eventually_blocking(self.pumped(condition), what, timeout=limit, ceiling=0.02)
        except NeverHappened as failure:
            raise NeverHappened(f"{failure}; phase {self.controller.machine.phase}") from None

    def settle(self, seconds: float = 0.3) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.root.update()
            # Pacing, not a wait for a condition: Tk is pumped while the window handles what
            # xdotool typed; the steps after it wait for their own conditions with until().
            time.sleep(0.02)

    def keys(self, *keys: str) -> None:
        subprocess.run(["xdotool", "key", "--delay", "30", *keys], env=self.xvfb.env, check=True)
        self.settle()

    def _type(self, text: str) -> None:
        # The text goes to xdotool on stdin: typed passwords must not show up in its command line.
        subprocess.run(
            ["xdotool", "type", "--delay", "20", "--file", "-"],
            input=text.encode(),
            env=self.xvfb.env,
            check=True,
        )

    def type(self, text: str) -> None:
        self._type(text)
        self.settle()

    def focused(self) -> object:
        return self.root.focus_get()

    def close(self) -> None:
        self.window.close()

    async def until_async(self, condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
        """Like :meth:`until`, yielding to the event loop (a dashboard may run in this loop)."""
        try:
            await eventually(self.pumped(condition), what, timeout=limit, ceiling=0.02)
        except NeverHappened as failure:
            raise NeverHappened(f"{failure}; phase {self.controller.machine.phase}") from None

    async def settle_async(self, seconds: float = 0.3) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.root.update()
            await asyncio.sleep(0.02)  # pacing: as settle()

    async def keys_async(self, *keys: str) -> None:
        await asyncio.to_thread(
            subprocess.run, ["xdotool", "key", "--delay", "30", *keys], env=self.xvfb.env, check=True
        )
        await self.settle_async()

    async def type_async(self, text: str) -> None:
        await asyncio.to_thread(self._type, text)
        await self.settle_async()


def cmdlines_containing(secret: str) -> list[str]:
    """Every process whose command line (world-readable in /proc) contains ``secret``."""
    hits = []
    needle = secret.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        if needle in raw:
            command = raw.replace(b"\0", b" ").decode(errors="replace")
            hits.append(f"pid {entry.name}: {command}")
    return hits


class CmdlineWatch:
    """Samples every process's command line in the background while a session runs."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = [s for s in secrets if s]
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cmdline-watch", daemon=True)

    def add(self, secret: str) -> None:
        self.secrets.append(secret)

    def _run(self) -> None:
        while not self._stop.is_set():
            for secret in list(self.secrets):
                self.hits.extend(cmdlines_containing(secret))
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
