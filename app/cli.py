"""The ``kvm-vdi`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app import db as database
from app.settings import Settings, load_settings


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.application import create_app
    from app.proxy.wsprotocol import DashboardWebSocketProtocol

    server = settings.server.model_copy(
        update={"host": args.host or settings.server.host, "port": args.port or settings.server.port}
    )
    settings = settings.model_copy(update={"server": server, "demo": settings.demo or args.demo})
    uvicorn.run(
        create_app(settings),
        host=server.host,
        port=server.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        forwarded_allow_ips=server.forwarded_allow_ips,
        ssl_certfile=server.ssl_certfile,
        ssl_keyfile=server.ssl_keyfile,
        ws=DashboardWebSocketProtocol,
    )
    return 0


def _cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.database_url.get_secret_value()
    database.upgrade(url)
    print(f"database {database.safe_url(url)} at revision {database.current_revision(url)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvm-vdi", description="KVM-VDI dashboard")
    parser.add_argument("--config", help="TOML configuration file (default: $KVMVDI_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the dashboard")
    serve.add_argument("--demo", action="store_true", help="register a demo hypervisor (libvirt test driver)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_cmd_serve)

    db_cmd = sub.add_parser("db", help="database maintenance")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations").set_defaults(func=_cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result: int = args.func(settings, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
