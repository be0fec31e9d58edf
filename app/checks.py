"""``kvm-vdi check``: is this installation ready to serve?

Checks the configuration, the data directory, the directory (reachable, TLS, the
service account's bind; cleartext is a warning), the database (reachable, schema
at the latest revision), the cluster (replicas, duty holder, Redis, Galera; or that
this is one process) and every hypervisor (reachable, host key as pinned,
libvirt answering, directories usable), and prints one line per check. A
failure fails the command, except on a hypervisor in maintenance (shown as
"warn"). Never prints a secret: the database URL is shown with its password masked.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import db as database
from app.directory.check import check_directory
from app.settings import Settings

if TYPE_CHECKING:
    from app.hyper.probe import ProbeResult
    from app.hyper.records import HypervisorRecord
    from app.hyper.spice_tls import SpiceTls
    from app.hyper.sshkeys import DashboardKey, KnownHostsFile
    from app.tlsca import DashboardCA

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass(frozen=True)
class CheckLine:
    subject: str
    result: str
    detail: str


@dataclass
class CheckReport:
    lines: list[CheckLine] = field(default_factory=list)

    def add(self, subject: str, result: str, detail: str) -> None:
        self.lines.append(CheckLine(subject, result, detail))

    @property
    def ok(self) -> bool:
        return all(line.result != FAIL for line in self.lines)

    def table(self) -> str:
        width = max([len("CHECK"), *(len(line.subject) for line in self.lines)])
        rows = [f"{'CHECK':<{width}}  {'RESULT':<6}  DETAIL"]
        rows += [f"{line.subject:<{width}}  {line.result:<6}  {line.detail}" for line in self.lines]
        failed = sum(line.result == FAIL for line in self.lines)
        rows.append("")
        rows.append("all checks passed" if not failed else f"{failed} check(s) failed")
        return "\n".join(rows)


def _short(exc: BaseException) -> str:
    """One line about an error: the driver's own message, not SQLAlchemy's wrapping."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text[:300]


def _data_dir_line(settings: Settings) -> CheckLine:
    path = Path(settings.data_dir).resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        return CheckLine("data directory", FAIL, f"{path} is not writable by this user")
    state = "exists" if path.exists() else "will be created at first start"
    return CheckLine("data directory", OK, f"{path} ({state})")


def _alert_lines(settings: Settings) -> list[CheckLine]:
    """Where alerts go, and how long each watched certificate has left (warn within the warning days)."""
    from datetime import UTC, datetime

    from app.alerts import watched_certificates
    from app.alerts.certificates import not_after

    config = settings.alerts
    channels = [
        name for name, on in (("e-mail", bool(config.email_to)), ("webhook", config.webhook_url)) if on
    ]
    lines = [
        CheckLine("alerts", OK, f"sent by {' and '.join(channels)}")
        if channels
        else CheckLine("alerts", WARN, "no e-mail or webhook configured ([alerts]): alerts are only logged")
    ]
    for name, path in watched_certificates(settings, {}).items():
        subject = f"certificate {name}"
        try:
            expires = not_after(path)
        except (OSError, ValueError) as exc:
            lines.append(CheckLine(subject, FAIL, f"{path}: cannot be read: {_short(exc)}"))
            continue
        days = (expires - datetime.now(UTC)).total_seconds() / 86400
        result = FAIL if days < 0 else WARN if days <= config.certificate_warning_days else OK
        when = "expired" if days < 0 else f"expires in {days:.0f} days"
        lines.append(CheckLine(subject, result, f"{path}: {when} ({expires:%Y-%m-%d})"))
    return lines


async def run_checks(settings: Settings, *, config_source: str | None) -> CheckReport:
    report = CheckReport()
    source = f"file {config_source}" if config_source else "no file (defaults)"
    report.add("configuration", OK, f"{source} + KVMVDI_* environment")
    report.lines.append(_data_dir_line(settings))
    report.lines.extend(_alert_lines(settings))
    ca_line, ca = _ca_line(settings)
    report.lines.append(ca_line)
    report.add("directory", *await asyncio.to_thread(check_directory, settings.directory))

    url = settings.database_url.get_secret_value()
    shown = database.safe_url(url)
    try:
        current = await asyncio.to_thread(database.current_revision, url)
    except Exception as exc:  # any failure to connect is the check's answer
        report.add("database", FAIL, f"{shown}: cannot connect: {_short(exc)}")
        report.add("hypervisors", SKIP, "not checked without a database")
        return report
    head = database.head_revision()
    if current != head:
        report.add(
            "database",
            FAIL,
            f"{shown}: schema at revision {current or '(empty)'}, latest is {head}: run `kvm-vdi db upgrade`",
        )
        report.add("hypervisors", SKIP, "not checked before the schema is up to date")
        return report
    report.add("database", OK, f"{shown}, schema at the latest revision ({head})")

    for line in await check_cluster(settings, url):
        report.lines.append(line)
    for line in await check_hypervisors(settings, url, ca):
        report.lines.append(line)
    return report


async def check_cluster(settings: Settings, url: str) -> list[CheckLine]:
    from app.cluster.report import cluster_lines

    db = database.connect_database(url)
    await db.connect()
    try:
        return [
            CheckLine(line.subject, line.result, line.detail) for line in await cluster_lines(settings, db)
        ]
    finally:
        await db.disconnect()


def _ca_line(settings: Settings) -> tuple[CheckLine, DashboardCA | None]:
    """The SPICE CA: present, private, not about to expire (read only: the dashboard makes it)."""
    from app.tlsca import DashboardCA

    directory = settings.ca_dir()
    key, cert = directory / "ca.key", directory / "ca.pem"
    subject = "console CA"
    if not key.exists() or not cert.exists():
        return CheckLine(
            subject, WARN, f"{directory} has no CA yet: the dashboard makes it at its first start"
        ), None
    loose = [p.name for p in (key, cert) if p.stat().st_mode & 0o077]
    if loose:
        return CheckLine(
            subject, FAIL, f"{', '.join(loose)} in {directory} readable by others: chmod 0600"
        ), None
    try:
        ca = DashboardCA.load_or_create(directory)
    except (OSError, ValueError) as exc:
        return CheckLine(subject, FAIL, f"{directory}: cannot be read: {_short(exc)}"), None
    return CheckLine(subject, OK, f"{cert} (0600), valid until {ca.not_after:%Y-%m-%d}"), ca


async def check_hypervisors(settings: Settings, url: str, ca: DashboardCA | None = None) -> list[CheckLine]:
    from app.hyper.spice_tls import SpiceTls
    from app.hyper.sshkeys import DashboardKey, KnownHostsFile
    from app.inventory import hypervisors as records

    db = database.connect_database(url)
    await db.connect()
    try:
        rows = await records.list_all(db)
    finally:
        await db.disconnect()
    if not rows:
        return [CheckLine("hypervisors", SKIP, "none registered yet")]
    ssh_dir = Path(settings.data_dir) / "ssh"
    key_path = ssh_dir / "id_ed25519"
    # Read-only: a missing key is reported, not created (the dashboard creates it at its first start).
    key = DashboardKey(private_path=key_path, public_line="")
    known_hosts = KnownHostsFile(ssh_dir)
    spice_tls = SpiceTls(ca) if ca is not None else None
    outcomes = await asyncio.gather(
        *(
            probe_lines(row, key, known_hosts, key_exists=key_path.exists(), spice_tls=spice_tls)
            for row in rows
        )
    )
    return [line for lines in outcomes for line in lines]


async def probe_lines(
    row: HypervisorRecord,
    key: DashboardKey,
    known_hosts: KnownHostsFile,
    *,
    key_exists: bool,
    spice_tls: SpiceTls | None = None,
) -> list[CheckLine]:
    """The reachability line of a hypervisor, and what desktops it can run."""
    from app.hyper.probe import probe

    if row.transport == "ssh" and not key_exists:
        return [await probe_line(row, key, known_hosts, key_exists=key_exists)]
    result = await probe(row, key, known_hosts, spice_tls=spice_tls, desktops=True)
    lines = [
        await probe_line(row, key, known_hosts, key_exists=key_exists, spice_tls=spice_tls, result=result)
    ]
    if result.ok and result.desktops is not None:
        lines.append(desktops_line(row.name, result.desktops))
    return lines


OPTION_NAMES = {
    "uefi": "UEFI",
    "secure_boot": "Secure Boot",
    "tpm": "TPM 2.0",
    "host-model": "host-model CPU",
    "host-passthrough": "host-passthrough CPU",
}


def desktops_line(name: str, offered: dict[str, Any]) -> CheckLine:
    """``UEFI: yes (TCG; KVM: ...)``, per option: where it runs, or why it cannot."""
    labels = offered.get("labels", {})
    parts: list[str] = []
    missing: list[str] = []
    for option, label in OPTION_NAMES.items():
        answers = offered["options"].get(option, {})
        runs = [dt for dt in offered.get("domain_types", []) if answers.get(dt, {}).get("ok")]
        refusals = [f"{labels.get(dt, dt)}: {a['reason']}" for dt, a in answers.items() if not a.get("ok")]
        if runs and runs[0] == "kvm":
            parts.append(f"{label} yes (KVM)")
        elif runs:
            parts.append(f"{label} yes, emulated only ({'; '.join(refusals)})")
        else:
            parts.append(f"{label} no ({'; '.join(refusals)})")
            missing.append(label)
    # Windows 11 needs UEFI, Secure Boot and a TPM: a host that cannot run them needs attention.
    needed = {"UEFI", "Secure Boot", "TPM 2.0"}
    result = WARN if needed & set(missing) else OK
    return CheckLine(f"desktops on {name}", result, "; ".join(parts))


async def probe_line(
    row: HypervisorRecord,
    key: DashboardKey,
    known_hosts: KnownHostsFile,
    *,
    key_exists: bool,
    spice_tls: SpiceTls | None = None,
    result: ProbeResult | None = None,
) -> CheckLine:
    from app.hyper.probe import probe
    from app.inventory.service import CheckOutcome

    subject = f"hypervisor {row.name}"
    if row.transport == "ssh" and not key_exists:
        return CheckLine(
            subject,
            FAIL,
            f"the dashboard's SSH key {key.private_path} does not exist: start the dashboard once",
        )
    if result is None:
        result = await probe(row, key, known_hosts, spice_tls=spice_tls)
    outcome = CheckOutcome.from_probe(result)
    if not outcome.ok:
        if row.maintenance:
            return CheckLine(subject, WARN, f"(in maintenance) {outcome.reason}")
        return CheckLine(subject, FAIL, outcome.reason)
    detail = outcome.summary(row.name).split(" is reachable: ", 1)[1]
    if result.spice_certificate and not outcome.warnings:
        detail += f"; SPICE certificate {result.spice_certificate}"
    return CheckLine(subject, WARN if outcome.warnings else OK, detail)
