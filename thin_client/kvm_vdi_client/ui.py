"""The launcher's full-screen Tk window: a thin view over the session state machine.

Four screens (log-in, progress, pool choice, error), each fully usable with the
keyboard: Tab moves between fields and buttons, Enter submits or connects, the
arrow keys move in the pool list, Escape cancels a confirmation. The window
renders :class:`~kvm_vdi_client.machine.SessionMachine` after every event and
sends user actions back as events; it holds no session logic of its own.
"""

from __future__ import annotations

import logging
import tkinter as tk
from tkinter import ttk

from kvm_vdi_client.config import DEFAULT_TITLE, UiConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import (
    ChoosePoolRequested,
    Dismissed,
    LoginSubmitted,
    LogoutRequested,
    Phase,
    PoolChosen,
    PowerRequested,
    RefreshRequested,
    RetryRequested,
)
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.i18n import state_label
from kvm_vdi_client.model import Pool

log = logging.getLogger(__name__)

PUMP_INTERVAL_MS = 50
BUSY_PHASES = (Phase.LOGGING_IN, Phase.REQUESTING, Phase.BOOTING, Phase.RECONNECTING, Phase.RELEASING)
HIDDEN_PHASES = (Phase.VIEWING, Phase.FAILOVER)


class LauncherWindow:
    def __init__(self, root: tk.Tk, controller: Controller, config: UiConfig) -> None:
        self.root = root
        self.controller = controller
        self.machine = controller.machine
        self._shown_pools: tuple[Pool, ...] | None = None
        self._screen: ttk.Frame | None = None
        self._hidden = False
        self._pending: str | None = None

        # The default title is said in the launcher's language; a configured one as it is written.
        title = _(DEFAULT_TITLE) if config.title == DEFAULT_TITLE else config.title
        root.title(title)
        if config.fullscreen:
            # Thin clients run X without a window manager, which is what honours "-fullscreen";
            # cover the screen by geometry too.
            root.geometry(f"{root.winfo_screenwidth()}x{root.winfo_screenheight()}+0+0")
            root.attributes("-fullscreen", True)
        else:
            root.geometry("900x600")
        root.protocol("WM_DELETE_WINDOW", lambda: None)  # only the session ends the launcher's screen
        self._style()

        outer = ttk.Frame(root, padding=24, style="Launcher.TFrame")
        outer.pack(fill="both", expand=True)
        header = ttk.Frame(outer, style="Launcher.TFrame")
        header.pack(fill="x")
        ttk.Label(header, text=title, style="Title.TLabel").pack(side="left")
        self.user_label = ttk.Label(header, text="", style="Launcher.TLabel")
        self.user_label.pack(side="right")
        self.body = ttk.Frame(outer, style="Launcher.TFrame")
        self.body.pack(fill="both", expand=True, pady=(24, 0))

        self.login_screen = self._build_login()
        self.busy_screen = self._build_busy()
        self.pool_screen = self._build_pools()
        self.error_screen = self._build_error()

        controller.subscribe(self.render)
        self.render()

    # -- look ------------------------------------------------------------------

    def _style(self) -> None:
        style = ttk.Style(self.root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        base = ("DejaVu Sans", 13)
        style.configure(".", font=base)
        style.configure("Launcher.TFrame", background="#1f2a36")
        style.configure("Launcher.TLabel", background="#1f2a36", foreground="#e8eef4", font=base)
        style.configure(
            "Title.TLabel", background="#1f2a36", foreground="#ffffff", font=("DejaVu Sans", 20, "bold")
        )
        style.configure("Notice.TLabel", background="#1f2a36", foreground="#ffd479", font=base)
        style.configure("Error.TLabel", background="#1f2a36", foreground="#ff9b9b", font=("DejaVu Sans", 14))
        style.configure("Treeview", rowheight=30, font=base)
        style.configure("Treeview.Heading", font=("DejaVu Sans", 12, "bold"))
        self.root.configure(background="#1f2a36")

    def _label(
        self, parent: tk.Misc, text: str = "", style: str = "Launcher.TLabel", **options: object
    ) -> ttk.Label:
        return ttk.Label(parent, text=text, style=style, **options)  # type: ignore[arg-type]

    # -- screens ---------------------------------------------------------------

    def _build_login(self) -> ttk.Frame:
        frame = ttk.Frame(self.body, style="Launcher.TFrame")
        form = ttk.Frame(frame, style="Launcher.TFrame")
        form.place(relx=0.5, rely=0.35, anchor="center")
        self._label(form, _("User name")).grid(row=0, column=0, sticky="w", pady=6, padx=(0, 12))
        self.username_entry = ttk.Entry(form, width=28, font=("DejaVu Sans", 13))
        self.username_entry.grid(row=0, column=1, pady=6)
        self._label(form, _("Password")).grid(row=1, column=0, sticky="w", pady=6, padx=(0, 12))
        self.password_entry = ttk.Entry(form, width=28, show="•", font=("DejaVu Sans", 13))
        self.password_entry.grid(row=1, column=1, pady=6)
        self.login_button = ttk.Button(form, text=_("Log in"), command=self._submit_login, default="active")
        self.login_button.grid(row=2, column=1, sticky="e", pady=(12, 6))
        self.login_notice = self._label(form, style="Notice.TLabel", wraplength=520)
        self.login_notice.grid(row=3, column=0, columnspan=2, sticky="w", pady=(12, 0))
        for widget in (self.username_entry, self.password_entry, self.login_button):
            widget.bind("<Return>", lambda _e: self._submit_login())
            widget.bind("<KP_Enter>", lambda _e: self._submit_login())
        return frame

    def _build_busy(self) -> ttk.Frame:
        frame = ttk.Frame(self.body, style="Launcher.TFrame")
        inner = ttk.Frame(frame, style="Launcher.TFrame")
        inner.place(relx=0.5, rely=0.35, anchor="center")
        self.status_label = self._label(inner, wraplength=700)
        self.status_label.pack(pady=(0, 12))
        self.progress_bar = ttk.Progressbar(inner, length=480, maximum=1.0)
        self.progress_bar.pack()
        self.busy_notice = self._label(inner, style="Notice.TLabel", wraplength=700)
        self.busy_notice.pack(pady=(12, 0))
        # While a desktop is being requested (straight after log-in too), the pool list is one key away.
        self.pools_button = ttk.Button(
            inner, text=_("Show all pools"), command=lambda: self._send(ChoosePoolRequested())
        )
        self.pools_button.bind("<Return>", lambda e: e.widget.invoke())
        return frame

    def _build_pools(self) -> ttk.Frame:
        frame = ttk.Frame(self.body, style="Launcher.TFrame")
        self._label(frame, _("Choose a desktop pool")).pack(anchor="w")
        self.pool_tree = ttk.Treeview(
            frame, columns=("free", "desktop"), selectmode="browse", height=8, takefocus=True
        )
        self.pool_tree.heading("#0", text=_("Pool"))
        self.pool_tree.heading("free", text=_("Free desktops"))
        self.pool_tree.heading("desktop", text=_("Your desktop"))
        self.pool_tree.column("#0", width=380)
        self.pool_tree.column("free", width=160, anchor="center")
        self.pool_tree.column("desktop", width=300)
        self.pool_tree.pack(fill="both", expand=True, pady=(8, 8))
        self.pool_tree.bind("<Return>", lambda _e: self._connect())
        self.pool_tree.bind("<KP_Enter>", lambda _e: self._connect())
        self.pool_tree.bind("<Double-1>", lambda _e: self._connect())
        self.pool_tree.bind("<<TreeviewSelect>>", lambda _e: self._update_pool_buttons())
        self.pool_description = self._label(frame, wraplength=900)
        self.pool_description.pack(anchor="w")

        buttons = ttk.Frame(frame, style="Launcher.TFrame")
        buttons.pack(fill="x", pady=(12, 0))
        self.connect_button = ttk.Button(buttons, text=_("Connect"), command=self._connect, default="active")
        self.refresh_button = ttk.Button(
            buttons, text=_("Refresh"), command=lambda: self._send(RefreshRequested())
        )
        self.shutdown_button = ttk.Button(buttons, text=_("Shut down my desktop"), command=self._shutdown)
        self.poweroff_button = ttk.Button(buttons, text=_("Force off…"), command=self._confirm_poweroff)
        self.logout_button = ttk.Button(
            buttons, text=_("Log out"), command=lambda: self._send(LogoutRequested())
        )
        for button in (self.connect_button, self.refresh_button, self.shutdown_button, self.poweroff_button):
            button.pack(side="left", padx=(0, 8))
            button.bind("<Return>", lambda e: e.widget.invoke())
        self.logout_button.pack(side="right")
        self.logout_button.bind("<Return>", lambda e: e.widget.invoke())

        self.confirm_frame = ttk.Frame(frame, style="Launcher.TFrame")
        self.confirm_label = self._label(self.confirm_frame, style="Notice.TLabel", wraplength=700)
        self.confirm_label.pack(side="left", padx=(0, 12))
        self.confirm_yes = ttk.Button(self.confirm_frame, text=_("Force off"), command=self._poweroff)
        self.confirm_no = ttk.Button(self.confirm_frame, text=_("Cancel"), command=self._cancel_confirm)
        self.confirm_yes.pack(side="left", padx=(0, 8))
        self.confirm_no.pack(side="left")
        for button in (self.confirm_yes, self.confirm_no):
            button.bind("<Return>", lambda e: e.widget.invoke())
            button.bind("<Escape>", lambda _e: self._cancel_confirm())

        self.pool_notice = self._label(frame, style="Notice.TLabel", wraplength=900)
        self.pool_notice.pack(anchor="w", pady=(12, 0))
        return frame

    def _build_error(self) -> ttk.Frame:
        frame = ttk.Frame(self.body, style="Launcher.TFrame")
        inner = ttk.Frame(frame, style="Launcher.TFrame")
        inner.place(relx=0.5, rely=0.35, anchor="center")
        self.error_label = self._label(inner, style="Error.TLabel", wraplength=760, justify="left")
        self.error_label.pack(pady=(0, 18))
        buttons = ttk.Frame(inner, style="Launcher.TFrame")
        buttons.pack()
        self.retry_button = ttk.Button(buttons, text=_("Retry"), command=lambda: self._send(RetryRequested()))
        self.back_button = ttk.Button(buttons, text=_("Back"), command=lambda: self._send(Dismissed()))
        self.retry_button.pack(side="left", padx=8)
        self.back_button.pack(side="left", padx=8)
        for button in (self.retry_button, self.back_button):
            button.bind("<Return>", lambda e: e.widget.invoke())
        return frame

    # -- actions ---------------------------------------------------------------

    def _send(self, event: object) -> None:
        self.controller.dispatch(event)  # type: ignore[arg-type]

    def _submit_login(self) -> None:
        username = self.username_entry.get()
        password = self.password_entry.get()
        self.password_entry.delete(0, "end")
        self._send(LoginSubmitted(username, password))

    def selected_pool(self) -> Pool | None:
        selection = self.pool_tree.selection()
        if not selection:
            return None
        return next((pool for pool in self._shown_pools or () if str(pool.id) == selection[0]), None)

    def _connect(self) -> None:
        pool = self.selected_pool()
        if pool is not None:
            self._send(PoolChosen(pool.id))

    def _shutdown(self) -> None:
        pool = self.selected_pool()
        if pool is not None and pool.desktop is not None:
            self._send(PowerRequested(pool.desktop.vm_id, "shutdown"))

    def _confirm_poweroff(self) -> None:
        pool = self.selected_pool()
        if pool is None or pool.desktop is None:
            return
        self.confirm_label.configure(
            text=_("Force off “{name}”? Like pulling the plug: unsaved work in it is lost.").format(
                name=pool.desktop.name
            )
        )
        self.confirm_frame.pack(anchor="w", pady=(12, 0), before=self.pool_notice)
        self.confirm_no.focus_set()

    def _poweroff(self) -> None:
        pool = self.selected_pool()
        self._cancel_confirm()
        if pool is not None and pool.desktop is not None:
            self._send(PowerRequested(pool.desktop.vm_id, "poweroff"))

    def _cancel_confirm(self) -> None:
        self.confirm_frame.pack_forget()
        self.pool_tree.focus_set()

    # -- rendering -------------------------------------------------------------

    def _show(self, screen: ttk.Frame, focus: tk.Widget | None) -> None:
        if self._screen is not screen:
            if self._screen is not None:
                self._screen.pack_forget()
            screen.pack(fill="both", expand=True)
            self._screen = screen
            if focus is not None:
                focus.focus_set()

    def render(self) -> None:
        machine = self.machine
        phase = machine.phase
        self.user_label.configure(text=machine.user.display_name if machine.user else "")
        if phase in HIDDEN_PHASES:
            # The viewer owns the screen; the launcher comes back when it exits.
            if not self._hidden:
                self.root.withdraw()
                self._hidden = True
            return
        if self._hidden:
            self.root.deiconify()
            self._hidden = False
        if phase is Phase.LOGGED_OUT:
            self._render_login()
        elif phase in BUSY_PHASES:
            self._render_busy()
        elif phase is Phase.CHOOSING_POOL:
            self._render_pools()
        elif phase is Phase.ERROR:
            self._render_error()

    def _render_login(self) -> None:
        self.login_notice.configure(text=self.machine.notice or "")
        focus = self.password_entry if self.username_entry.get() else self.username_entry
        self._show(self.login_screen, focus)

    def _render_busy(self) -> None:
        machine = self.machine
        self.status_label.configure(text=machine.status)
        self.busy_notice.configure(text=machine.notice or "")
        if machine.progress is None:
            self.progress_bar.configure(mode="indeterminate")
            self.progress_bar.start(60)
        else:
            self.progress_bar.stop()
            self.progress_bar.configure(mode="determinate", value=machine.progress)
        if machine.can_choose_pool:
            if not self.pools_button.winfo_manager():
                self.pools_button.pack(pady=(18, 0))
                self.pools_button.focus_set()
        else:
            self.pools_button.pack_forget()
        self._show(self.busy_screen, None)

    def _render_pools(self) -> None:
        machine = self.machine
        if machine.pools is not self._shown_pools:
            self._fill_pools(machine.pools or ())
        self.pool_notice.configure(
            text=machine.notice or (_("Loading pools…") if machine.pools is None else "")
        )
        self._show(self.pool_screen, self.pool_tree)
        self._update_pool_buttons()

    def _fill_pools(self, pools: tuple[Pool, ...]) -> None:
        previous = self.pool_tree.selection()
        self.pool_tree.delete(*self.pool_tree.get_children())
        for pool in pools:
            free = (
                _("maintenance")
                if pool.maintenance
                else _("{free} of {size}").format(free=pool.free, size=pool.size)
            )
            desktop = f"{pool.desktop.name} ({state_label(pool.desktop.state)})" if pool.desktop else ""
            self.pool_tree.insert("", "end", iid=str(pool.id), text=pool.name, values=(free, desktop))
        self._shown_pools = self.machine.pools
        keep = [iid for iid in previous if self.pool_tree.exists(iid)]
        if keep or pools:
            chosen = keep[0] if keep else str(pools[0].id)
            self.pool_tree.selection_set(chosen)
            self.pool_tree.focus(chosen)

    def _update_pool_buttons(self) -> None:
        pool = self.selected_pool()
        self.pool_description.configure(text=pool.description if pool else "")
        has_desktop = pool is not None and pool.desktop is not None
        self.connect_button.state(["!disabled"] if pool is not None else ["disabled"])
        for button in (self.shutdown_button, self.poweroff_button):
            button.state(["!disabled"] if has_desktop else ["disabled"])

    def _render_error(self) -> None:
        machine = self.machine
        self.error_label.configure(text=machine.error or _("Something went wrong."))
        if machine.can_retry:
            self.retry_button.pack(side="left", padx=8, before=self.back_button)
        else:
            self.retry_button.pack_forget()
        self._show(self.error_screen, self.retry_button if machine.can_retry else self.back_button)

    # -- event loop ------------------------------------------------------------

    def start(self) -> None:
        """Begin pumping the controller from Tk's event loop."""
        self._pending = self.root.after(PUMP_INTERVAL_MS, self._pump)

    def _pump(self) -> None:
        try:
            self.controller.pump(0)
        finally:
            self._pending = self.root.after(PUMP_INTERVAL_MS, self._pump)

    def close(self) -> None:
        """Stop the timers this window scheduled, then destroy it."""
        if self._pending is not None:
            self.root.after_cancel(self._pending)
            self._pending = None
        self.progress_bar.stop()
        self.root.destroy()
