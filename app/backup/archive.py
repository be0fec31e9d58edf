"""``kvm-vdi backup`` and ``kvm-vdi restore``: what goes into a backup, and where it comes back.

A backup is a tar stream, encrypted (:mod:`app.backup.crypto`), holding:

- ``manifest.json``: format, when, the product version, the database backend, schema
  revision and rows per table, the files included;
- ``database/<table>.jsonl``: the consistent database dump (:mod:`app.backup.dump`);
- ``data/...``: from the data directory, the dashboard's SSH key pair and pinned host
  keys (``ssh/``), the certificate authority (``ca/``) if there is one, and the
  generated session secret;
- ``config/config.toml``: the configuration file in use, if any.

Restore goes into a fresh install: the database must be empty (``--force``
replaces it), files of the data directory are written with private permissions
(``--force`` also overwrites differing ones), and the configuration comes back as
``<data_dir>/restored/config.toml`` to compare with the new machine's (its database
URL or addresses may differ).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

from app.backup.crypto import CHUNK, EncryptingWriter, decrypted
from app.backup.dump import DumpInfo, RestoreRefused, dump_database, load_database
from app.i18n import gettext as _

# What of the data directory a backup keeps (never the SQLite file, disks or caches).
DATA_ENTRIES = ("ssh", "ca", "session_secret")
MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    revision: str | None
    rows: dict[str, int]
    files: list[str]
    config: bool


def _product_version() -> str:
    try:
        return version("kvm-vdi")
    except PackageNotFoundError:
        return "unknown"


def _data_files(data_dir: Path) -> list[Path]:
    found: list[Path] = []
    for entry in DATA_ENTRIES:
        path = data_dir / entry
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
    return found


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def create_backup(
    out_path: Path, passphrase: str, *, database_url: str, data_dir: Path, config_file: Path | None
) -> BackupSummary:
    """Write an encrypted backup to ``out_path`` (through a temporary name, renamed at the end)."""
    partial = out_path.with_name(out_path.name + ".part")
    with tempfile.TemporaryDirectory(prefix="kvmvdi-backup-") as scratch:
        dump_dir = Path(scratch)
        info = dump_database(database_url, dump_dir)
        files = _data_files(data_dir)
        names = [str(PurePosixPath("data") / path.relative_to(data_dir).as_posix()) for path in files]
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "product_version": _product_version(),
            "database": {"backend": info.backend, "revision": info.revision, "rows": info.rows},
            "files": names,
            "config": config_file is not None,
        }
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw:
                writer = EncryptingWriter(raw, passphrase)
                with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
                    _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                    for table in info.rows:
                        tar.add(dump_dir / f"{table}.jsonl", arcname=f"database/{table}.jsonl")
                    for path, name in zip(files, names, strict=True):
                        tar.add(path, arcname=name)
                    if config_file is not None:
                        tar.add(config_file, arcname="config/config.toml")
                writer.close()
            os.replace(partial, out_path)
        finally:
            partial.unlink(missing_ok=True)
    return BackupSummary(out_path, info.revision, info.rows, names, config_file is not None)


@dataclass(frozen=True)
class RestoreSummary:
    revision: str | None
    rows: dict[str, int]
    files: list[str]
    config_path: Path | None
    created_at: str


def _safe_member(member: tarfile.TarInfo) -> bool:
    path = PurePosixPath(member.name)
    return member.isfile() and not path.is_absolute() and ".." not in path.parts


def _write_private(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(target.name + ".restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    # Public keys and known hosts may be world-readable, as ssh writes them.
    if target.suffix == ".pub" or target.name == "known_hosts":
        tmp.chmod(0o644)
    os.replace(tmp, target)


def restore_backup(
    in_path: Path, passphrase: str, *, database_url: str, data_dir: Path, force: bool
) -> RestoreSummary:
    """Restore the backup at ``in_path`` into the database and data directory given."""
    with (
        decrypted(in_path, passphrase) as plain,
        tempfile.TemporaryDirectory(prefix="kvmvdi-restore-") as scratch,
    ):
        dump_dir = Path(scratch)
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            manifest: dict[str, Any] = {}
            files: list[str] = []
            config_path: Path | None = None
            pending: list[tuple[Path, bytes]] = []
            for member in tar:
                if not _safe_member(member):
                    continue
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                name = PurePosixPath(member.name)
                if member.name == MANIFEST:
                    manifest = json.loads(extracted.read())
                elif name.parts[0] == "database" and len(name.parts) == 2:
                    with open(dump_dir / name.name, "wb") as table_file:
                        shutil.copyfileobj(extracted, table_file, CHUNK)
                elif name.parts[0] == "data":
                    pending.append((data_dir.joinpath(*name.parts[1:]), extracted.read()))
                    files.append(member.name)
                elif member.name == "config/config.toml":
                    config_path = data_dir / "restored" / "config.toml"
                    pending.append((config_path, extracted.read()))
        if manifest.get("format") != FORMAT:
            raise RestoreRefused(_("the backup has no manifest of a known format"))
        db_info = manifest["database"]
        info = DumpInfo(db_info["backend"], db_info["revision"], dict(db_info["rows"]))
        # Refuse before touching anything: a differing file is as much a conflict as a used database.
        conflicts = [
            str(target)
            for target, content in pending
            if target != config_path and target.exists() and target.read_bytes() != content
        ]
        if conflicts and not force:
            raise RestoreRefused(
                _("{names} exist(s) and differ(s) from the backup: pass --force to replace").format(
                    names=", ".join(conflicts)
                )
            )
        load_database(database_url, dump_dir, info, force=force)
    for target, content in pending:
        _write_private(target, content)
    return RestoreSummary(info.revision, info.rows, files, config_path, str(manifest.get("created_at", "")))
