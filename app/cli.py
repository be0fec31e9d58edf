"""The ``kvm-vdi`` command line: run the dashboard, migrate, manage admins, check the set-up.

Nothing here prints a secret: database URLs appear with the password masked,
passwords are read from a prompt or stdin and never echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from databases import Database
from pydantic import ValidationError

from app import db as database
from app.i18n import gettext as _
from app.i18n import set_default_language
from app.i18n.negotiation import command_language
from app.logging_setup import configure_logging
from app.settings import Settings, load_settings

log = logging.getLogger("kvmvdi.cli")


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit status 1."""


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.application import create_app
    from app.cluster.drain import DrainingServer
    from app.server.options import serving_options

    server = settings.server.model_copy(
        update={"host": args.host or settings.server.host, "port": args.port or settings.server.port}
    )
    cluster = settings.cluster.model_copy(update={"role": args.role or settings.cluster.role})
    settings = settings.model_copy(
        update={"server": server, "demo": settings.demo or args.demo, "cluster": cluster}
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        # Logging is ours (app.logging_setup): uvicorn adds no handlers, levels or access lines.
        log_config=None,
        log_level=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=server.forwarded_allow_ips,
        ssl_certfile=server.ssl_certfile,
        ssl_keyfile=server.ssl_keyfile,
        **serving_options(server),
        timeout_graceful_shutdown=round(settings.cluster.drain_timeout) if cluster.enabled else None,
    )

    def drain() -> Awaitable[None] | None:
        services = getattr(app.state, "services", None)
        if services is None or not services.cluster.clustered:
            return None
        drained: Awaitable[None] = services.cluster.drain()
        return drained

    DrainingServer(config, drain=drain).run()
    return 0


def _cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.database_url.get_secret_value()
    database.upgrade(url)
    print(
        _("database {url} at revision {revision}").format(
            url=database.safe_url(url), revision=database.current_revision(url)
        )
    )
    return 0


def _read_password(args: argparse.Namespace, username: str) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CommandError(_("no password on standard input"))
        return password
    if not sys.stdin.isatty():
        raise CommandError(_("standard input is not a terminal: pass the password with --password-stdin"))
    password = getpass.getpass(f"Password for {username}: ")
    if getpass.getpass("Repeat it: ") != password:
        raise CommandError(_("the two passwords differ"))
    return password


async def _with_database(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    url = settings.database_url.get_secret_value()
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(url)
    await db.connect()
    try:
        return await work(db)
    finally:
        await db.disconnect()


def _cmd_admin_create(settings: Settings, args: argparse.Namespace) -> int:
    from app.audit import AuditLog
    from app.auth.accounts import AccountError, create_local_user
    from app.auth.passwords import WeakPasswordError

    password = _read_password(args, args.name)

    async def work(db: Database) -> int:
        try:
            await create_local_user(
                db, args.name, password, role="admin", must_change_password=args.temporary
            )
        except (AccountError, WeakPasswordError) as exc:
            raise CommandError(str(exc)) from exc
        await AuditLog(db).record("user_created", actor="cli", target=args.name, role="admin")
        return 0

    status = asyncio.run(_with_database(settings, work))
    if args.temporary:
        print(
            _("administrator {name} created (must change the password at first log-in)").format(
                name=args.name
            )
        )
    else:
        print(_("administrator {name} created").format(name=args.name))
    return status


def _cmd_admin_set_password(settings: Settings, args: argparse.Namespace) -> int:
    from app.audit import AuditLog
    from app.auth.accounts import AccountError, find_local_user, set_password
    from app.auth.passwords import WeakPasswordError

    async def work(db: Database) -> int:
        row = await find_local_user(db, args.name)
        if row is None:
            raise CommandError(_("no local user named {name}").format(name=args.name))
        password = _read_password(args, args.name)
        try:
            await set_password(db, row.id, password, must_change=args.temporary)
        except (AccountError, WeakPasswordError) as exc:
            raise CommandError(str(exc)) from exc
        await AuditLog(db).record("password_set", actor="cli", target=args.name, temporary=args.temporary)
        return 0

    status = asyncio.run(_with_database(settings, work))
    if args.temporary:
        print(_("password of {name} set (temporary: must be changed at next log-in)").format(name=args.name))
    else:
        print(_("password of {name} set").format(name=args.name))
    return status


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from app.checks import run_checks

    config_source = args.config or os.environ.get("KVMVDI_CONFIG") or None
    report = asyncio.run(run_checks(settings, config_source=config_source))
    print(report.table())
    return 0 if report.ok else 1


MIN_PASSPHRASE = 12


def _read_passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    """From --passphrase-file (its first line) or a prompt; never from the command line."""
    if args.passphrase_file:
        try:
            with open(args.passphrase_file, encoding="utf-8") as fh:
                passphrase = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise CommandError(
                _("cannot read the passphrase file: {strerror}").format(strerror=exc.strerror)
            ) from exc
    else:
        if not sys.stdin.isatty():
            raise CommandError(
                _("standard input is not a terminal: pass the passphrase with --passphrase-file")
            )
        passphrase = getpass.getpass("Backup passphrase: ")
        if confirm and getpass.getpass("Repeat it: ") != passphrase:
            raise CommandError(_("the two passphrases differ"))
    if confirm and len(passphrase) < MIN_PASSPHRASE:
        raise CommandError(
            _("the passphrase must have at least {MIN_PASSPHRASE} characters").format(
                MIN_PASSPHRASE=MIN_PASSPHRASE
            )
        )
    if not passphrase:
        raise CommandError(_("empty passphrase"))
    return passphrase


def _cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.backup import create_backup

    passphrase = _read_passphrase(args, confirm=True)
    config = args.config or os.environ.get("KVMVDI_CONFIG") or None
    try:
        summary = create_backup(
            Path(args.file),
            passphrase,
            database_url=settings.database_url.get_secret_value(),
            data_dir=settings.data_dir,
            config_file=Path(config) if config else None,
        )
    except (OSError, FileNotFoundError) as exc:
        raise CommandError(_("backup failed: {exc}").format(exc=exc)) from exc
    rows = sum(summary.rows.values())
    written = (
        _(
            "backup written to {path}: {rows} rows in {tables} tables (schema {revision}), "
            "{files} files of the data directory, the configuration file"
        )
        if summary.config
        else _(
            "backup written to {path}: {rows} rows in {tables} tables (schema {revision}), "
            "{files} files of the data directory"
        )
    )
    print(
        written.format(
            path=summary.path,
            rows=rows,
            tables=len(summary.rows),
            revision=summary.revision,
            files=len(summary.files),
        )
    )
    return 0


def _cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.backup import BackupCryptoError, RestoreRefused, restore_backup

    passphrase = _read_passphrase(args, confirm=False)
    try:
        summary = restore_backup(
            Path(args.file),
            passphrase,
            database_url=settings.database_url.get_secret_value(),
            data_dir=settings.data_dir,
            force=args.force,
        )
    except (BackupCryptoError, RestoreRefused) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(_("restore failed: {exc}").format(exc=exc)) from exc
    url = settings.database_url.get_secret_value()
    print(
        _(
            "restored the backup of {created}: {rows} rows into {url} (now at schema {revision}), "
            "{files} files into {data_dir}"
        ).format(
            created=summary.created_at,
            rows=sum(summary.rows.values()),
            url=database.safe_url(url),
            revision=database.current_revision(url),
            files=len(summary.files),
            data_dir=settings.data_dir,
        )
    )
    if summary.config_path is not None:
        print(
            _("the backed-up configuration is in {path}: compare it with this machine's").format(
                path=summary.config_path
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvm-vdi", description=_("KVM-VDI dashboard"))
    parser.add_argument("--config", help=_("TOML configuration file (default: $KVMVDI_CONFIG)"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help=_("run the dashboard"))
    serve.add_argument(
        "--demo", action="store_true", help=_("register a demo hypervisor (libvirt test driver)")
    )
    serve.add_argument("--host", help=_("listen address (default: server.host)"))
    serve.add_argument("--port", type=int, help=_("listen port (default: server.port)"))
    serve.add_argument(
        "--role",
        choices=("all", "console"),
        help=_("all (default: cluster.role) or console: only consoles and health probes (a cluster replica)"),
    )
    serve.set_defaults(func=_cmd_serve)

    db_cmd = sub.add_parser("db", help=_("database maintenance"))
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help=_("apply migrations")).set_defaults(func=_cmd_db_upgrade)

    admin = sub.add_parser("admin", help=_("manage administrator accounts"))
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    for name, func, summary in (
        ("create", _cmd_admin_create, _("create an administrator")),
        ("set-password", _cmd_admin_set_password, _("set a local user's password")),
    ):
        cmd = admin_sub.add_parser(name, help=summary)
        cmd.add_argument("name", help=_("user name"))
        cmd.add_argument(
            "--password-stdin", action="store_true", help=_("read the password from the first line of stdin")
        )
        cmd.add_argument(
            "--temporary", action="store_true", help=_("the user must change the password at the next log-in")
        )
        cmd.set_defaults(func=func)

    check = sub.add_parser(
        "check",
        help=_("check the configuration, the database and every hypervisor; exit status 1 on failure"),
    )
    check.set_defaults(func=_cmd_check)

    backup = sub.add_parser(
        "backup",
        help=_("write an encrypted backup: database, SSH keys, pinned host keys, secrets, configuration"),
    )
    restore = sub.add_parser("restore", help=_("restore an encrypted backup into a fresh install"))
    for cmd, func in ((backup, _cmd_backup), (restore, _cmd_restore)):
        cmd.add_argument("file", help=_("the backup file"))
        cmd.add_argument(
            "--passphrase-file",
            help=_("read the passphrase from the first line of this file (else a prompt)"),
        )
        cmd.set_defaults(func=func)
    restore.add_argument(
        "--force", action="store_true", help=_("replace a database that is not empty and differing key files")
    )
    return parser


def _settings_errors(exc: ValidationError) -> str:
    # Only where and what: pydantic's own text would echo the rejected value, maybe a secret.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
    )


def main(argv: Sequence[str] | None = None) -> int:
    # The environment's language until the configuration (with its default) is read; --help too.
    set_default_language(command_language("en"))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ValidationError as exc:
        print(
            _("kvm-vdi: invalid configuration: {errors}").format(errors=_settings_errors(exc)),
            file=sys.stderr,
        )
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(_("kvm-vdi: invalid configuration: {errors}").format(errors=exc), file=sys.stderr)
        return 2
    set_default_language(command_language(settings.i18n.default_language))
    configure_logging(settings)
    try:
        result: int = args.func(settings, args)
    except CommandError as exc:
        print(f"kvm-vdi: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
