"""Every word a person reads is marked for translation: templates, scripts, what views answer
and what the thin-client launcher shows.

A line whose text no person reads (a log line, an answer for Prometheus) says so with an
``i18n-ignore`` comment.
"""

from __future__ import annotations

from pathlib import Path

from tests.i18n.unmarked import REPO, scan, scan_python, scan_script, scan_template

SOURCES = [
    *sorted((REPO / "app" / "templates").rglob("*.html")),
    *sorted((REPO / "app" / "static" / "js").glob("*.js")),
    *sorted((REPO / "app" / "static" / "spice_html5").glob("*.js")),
    *[p for p in sorted((REPO / "app").rglob("*.py")) if "migrations" not in p.parts],
    *sorted((REPO / "thin_client" / "kvm_vdi_client").glob("*.py")),
]


def test_every_readable_word_is_marked_for_translation() -> None:
    findings = [str(finding) for finding in scan(SOURCES)]
    assert findings == [], "mark these for translation (docs/translating.md), then `make catalogues`"


def test_the_check_finds_unmarked_words(tmp_path: Path) -> None:
    template = tmp_path / "sample.html"
    script = tmp_path / "sample.js"
    view = tmp_path / "sample.py"
    template.write_text(
        '<h1>{% trans %}Pools{% endtrans %}</h1>\n<p title="Start the machine">{{ _("Fine") }}</p>\n'
        '<button>Delete</button>\n{{ macro("memory", "Memory size") }}\n<code>virsh list</code>\n'
    )
    script.write_text(
        'toast(gettext("Started {name}.", {name}));\nnote.textContent = "Checking the hypervisor…";\n'
        'el.querySelector("#confirm-text");\nbutton.textContent = `Delete ${name}`;\n'
    )
    view.write_text(
        'def f(request):\n    return json_error("no_pool", "There is no such pool.", 404)\n'
        'def g(request):\n    return json_error("no_pool", _("There is no such pool."), 404)\n'
        'def h(request):\n    return redirect_with_toast("/", f"Deleted {name}.")\n'
    )
    assert [f.text for f in scan_template(template)] == [
        "title=Start the machine",
        "Delete",
        "Memory size",
    ]
    assert [f.text for f in scan_script(script)] == ["Checking the hypervisor…", "Delete ${}"]
    assert [(f.line, f.text) for f in scan_python(view)] == [
        (2, "There is no such pool."),
        (6, "Deleted {}."),
    ]


def test_the_check_finds_progress_messages_not_kept_for_each_reader(tmp_path: Path) -> None:
    """An operation's progress is stored and broadcast: its text must be a kept message (M_)."""
    work = tmp_path / "work.py"
    work.write_text(
        "async def work(op):\n"
        '    await op.progress(10, f"Defined {index} of {total}")\n'
        '    await op.progress(20, _("Defined {index} of {total}").format(index=1, total=2))\n'
        '    await op.progress(30, M_("Defined {index} of {total}", index=1, total=2))\n'
        '    await self.advance(Mn_("{count} disk", "{count} disks", 2, count=2))\n'
        "    await op.progress(40)\n"
    )
    assert [(f.line, f.text) for f in scan_python(work)] == [
        (2, "Defined {} of {}"),
        (3, "translated at once: Defined {index} of {total}"),
    ]


def test_the_check_finds_text_kept_aside_to_be_shown(tmp_path: Path) -> None:
    """Refusals by code, a form's errors, toasts written into a redirect's URL."""
    view = tmp_path / "sample.py"
    view.write_text(
        "def refused(pool):\n"
        '    messages = {"maintenance": "This pool is in maintenance.", "ok": _("Fine.")}\n'
        '    errors["name"] = f"Enter at most {limit} characters."\n'
        '    raise Invalid({"vm_ids": "choose at least one VM"})\n'
        '    return RedirectResponse(f"/pools/{pool.id}?toast=Members+saved#members", 303)\n'
        "def g(request):\n"
        "    return RedirectResponse(f\"/vms?toast={quote(f'Creating {n} VDI machines')}\", 303)\n"
        "def h(request):\n"
        '    return page(request, error="Tick the box once you have checked.")\n'
        "def quiet(request):\n"
        '    return RedirectResponse(f"/pools/{pool.id}#schedules", 303), page(request, error=f"{exc}.")\n'
        "def helper(raw):\n"
        '    _invalid_json("it cannot be read")\n'
        '    log_failure(log, "pool schedule %d failed", 3)\n'
    )
    assert [(f.line, f.text) for f in scan_python(view)] == [
        (2, "This pool is in maintenance."),
        (3, "Enter at most {} characters."),
        (4, "choose at least one VM"),
        (5, "Members saved"),
        (7, "Creating {} VDI machines"),
        (9, "Tick the box once you have checked."),
        (13, "it cannot be read"),
    ]


def test_the_check_finds_the_launchers_unmarked_statuses_and_errors(tmp_path: Path) -> None:
    """The launcher speaks through its state machine, its widgets and its exceptions."""
    module = tmp_path / "launcher.py"
    module.write_text(
        "def screen(self, key, url):\n"
        '    self._to(Phase.BOOTING, status=f"Starting {name}…")\n'
        '    self.notice = "Enter your user name and password."\n'
        '    raise ConfigError(f"{key}: expected true or false, got {value!r}")\n'
        '    raise ProtocolError("unexpected answer from the dashboard: token missing")\n'
        '    ttk.Button(form, text="Log in"), root.title("Configuration error")\n'
        '    parser.add_argument("--check", help="validate the configuration and exit")\n'
        '    self._to(Phase.LOGGED_OUT, notice=_("You have logged out."), status="")\n'
        '    ERROR = "Error"  # i18n-ignore: a phase name\n'
    )
    assert [(f.line, f.text) for f in scan_python(module, launcher=True)] == [
        (2, "Starting {}…"),
        (3, "Enter your user name and password."),
        (4, "{}: expected true or false, got {}"),
        (5, "unexpected answer from the dashboard: token missing"),
        (6, "Log in"),
        (6, "Configuration error"),
        (7, "validate the configuration and exit"),
    ]
    # The dashboard's own modules keep their rules (``status=`` is an HTTP status there); a
    # widget-like ``text=`` and a command-line option's ``help=`` speak there too (alerts, kvm-vdi).
    assert [f.text for f in scan_python(module, launcher=False)] == [
        "{}: expected true or false, got {}",
        "unexpected answer from the dashboard: token missing",
        "Log in",
        "validate the configuration and exit",
    ]
