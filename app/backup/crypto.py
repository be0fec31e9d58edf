"""The encrypted backup file: a passphrase, scrypt, and AES-256-GCM over a stream.

Layout::

    b"KVMVDI-BACKUP\\n"                       magic
    4-byte big-endian length + JSON header   {"format": 1, "kdf": "scrypt", "n", "r", "p", "salt", "nonce"}
    ciphertext ...                           AES-256-GCM of the plaintext (a tar stream), any length
    16-byte GCM tag

The key is scrypt(passphrase, salt) with n=2^17, r=8 (128 MiB, a few tenths of a second);
the header is authenticated as associated data. GCM via ``cryptography``'s streaming
encryptor never holds more than one chunk in memory. Decryption writes plaintext
to a private temporary file and hands it out only after the tag has verified, so
a damaged or forged backup is refused before anything is restored from it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from app.i18n import gettext as _

MAGIC = b"KVMVDI-BACKUP\n"
FORMAT = 1
TAG_BYTES = 16
CHUNK = 1 << 20
SCRYPT = {"n": 1 << 17, "r": 8, "p": 1}


class BackupCryptoError(Exception):
    """Not a backup, or the wrong passphrase, or a damaged or altered file."""


def derive_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


class EncryptingWriter:
    """A binary file-like object: what is written is encrypted into ``out``; :meth:`close` adds the tag."""

    def __init__(self, out: IO[bytes], passphrase: str) -> None:
        salt, nonce = os.urandom(16), os.urandom(12)
        header = json.dumps(
            {
                "format": FORMAT,
                "kdf": "scrypt",
                **SCRYPT,
                "salt": base64.b64encode(salt).decode(),
                "nonce": base64.b64encode(nonce).decode(),
            },
            sort_keys=True,
        ).encode()
        key = derive_key(passphrase, salt, **SCRYPT)
        self._encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(header)
        self._out = out
        self._out.write(MAGIC + struct.pack(">I", len(header)) + header)
        self.closed = False

    def write(self, data: bytes) -> int:
        self._out.write(self._encryptor.update(data))
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self.closed:
            self._out.write(self._encryptor.finalize() + self._encryptor.tag)
            self._out.flush()
            self.closed = True


def _read_header(source: IO[bytes]) -> tuple[bytes, dict[str, Any]]:
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupCryptoError(_("not a KVM-VDI backup file"))
    (length,) = struct.unpack(">I", source.read(4))
    if length > 4096:
        raise BackupCryptoError(_("damaged backup file (header)"))
    header_bytes = source.read(length)
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise BackupCryptoError(_("damaged backup file (header)")) from exc
    if header.get("format") != FORMAT or header.get("kdf") != "scrypt":
        raise BackupCryptoError(_("unsupported backup format {get!r}").format(get=header.get("format")))
    return header_bytes, header


@contextmanager
def decrypted(path: Path, passphrase: str) -> Iterator[IO[bytes]]:
    """The verified plaintext of the backup at ``path``, as a private temporary file open for reading."""
    size = path.stat().st_size
    with open(path, "rb") as source, tempfile.TemporaryFile(prefix="kvmvdi-restore-") as plain:
        header_bytes, header = _read_header(source)
        start = source.tell()
        if size - start < TAG_BYTES:
            raise BackupCryptoError(_("damaged backup file (truncated)"))
        source.seek(size - TAG_BYTES)
        tag = source.read(TAG_BYTES)
        source.seek(start)
        key = derive_key(
            passphrase, base64.b64decode(header["salt"]), int(header["n"]), int(header["r"]), int(header["p"])
        )
        decryptor = Cipher(algorithms.AES(key), modes.GCM(base64.b64decode(header["nonce"]), tag)).decryptor()
        decryptor.authenticate_additional_data(header_bytes)
        left = size - TAG_BYTES - start
        while left > 0:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise BackupCryptoError(_("damaged backup file (truncated)"))
            left -= len(chunk)
            plain.write(decryptor.update(chunk))
        try:
            plain.write(decryptor.finalize())
        except InvalidTag as exc:
            raise BackupCryptoError(
                _("wrong passphrase, or the backup file is damaged or was altered")
            ) from exc
        plain.seek(0)
        yield plain
