"""Screenshots of a running domain's display, as small PNG thumbnails.

libvirt streams the display as PPM (qemu) or PNG (test driver); Pillow turns it
into a PNG no wider than asked. Everything here blocks and runs on a worker thread.
"""

from __future__ import annotations

import contextlib
import io

import libvirt
from PIL import Image

from app.hyper.domains import lookup
from app.hyper.errors import HypervisorError, InvalidDomainState
from app.i18n import gettext as _

# A display bigger than this (8K RGB) is not a screenshot we want to decode.
_MAX_BYTES = 8192 * 4320 * 3 + 1024


def capture(conn: libvirt.virConnect, name: str) -> bytes:
    """The raw screenshot bytes of screen 0 (format as libvirt's driver chooses)."""
    domain = lookup(conn, name)
    if not domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is not running: nothing to take a screenshot of")
    stream = conn.newStream(0)
    chunks: list[bytes] = []
    size = 0

    def sink(_stream: libvirt.virStream, data: bytes, _opaque: object) -> int:
        nonlocal size
        size += len(data)
        if size > _MAX_BYTES:
            return -1
        chunks.append(data)
        return len(data)

    try:
        domain.screenshot(stream, 0, 0)
        stream.recvAll(sink, None)
        stream.finish()
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    if size > _MAX_BYTES:
        raise HypervisorError(
            _("the screenshot of {name!r} is larger than {MAX_BYTES} bytes").format(
                name=name, MAX_BYTES=_MAX_BYTES
            )
        )
    return b"".join(chunks)


def to_png(raw: bytes, max_width: int) -> bytes:
    """``raw`` (any format Pillow reads) as a PNG, scaled down to ``max_width`` keeping the aspect."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            picture = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise HypervisorError(_("unreadable screenshot: {exc}").format(exc=exc)) from exc
    if max_width > 0 and picture.width > max_width:
        height = max(1, round(picture.height * max_width / picture.width))
        picture = picture.resize((max_width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()


def screenshot_png(conn: libvirt.virConnect, name: str, max_width: int) -> bytes:
    return to_png(capture(conn, name), max_width)
