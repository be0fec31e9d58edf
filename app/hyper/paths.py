"""Path confinement: every path a command touches lies inside the hypervisor's own directories.

Paths reach commands as single arguments (never through a shell), but a path like
``/var/lib/kvm-vdi/images/../../../etc/shadow`` would still point elsewhere. So a
path must be absolute, already normalized (no ``.``, ``..``, ``//`` or trailing
slash), free of control characters, and lie under one of the allowed roots.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from app.hyper.errors import PathNotAllowed


def confine(path: str, roots: Iterable[str], *, allow_root: bool = False) -> str:
    """Return ``path`` unchanged if it is a normalized path inside one of ``roots``; raise otherwise."""
    if not isinstance(path, str) or not path:
        raise PathNotAllowed("the path is empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise PathNotAllowed("the path contains control characters")
    if not path.startswith("/"):
        raise PathNotAllowed(f"{path!r} is not an absolute path")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise PathNotAllowed(f"{path!r} is not normalized (no '.', '..', '//' or trailing '/')")
    clean_roots = [posixpath.normpath(root) for root in roots if root]
    for root in clean_roots:
        if allow_root and path == root:
            return path
        if path.startswith(root.rstrip("/") + "/") and path != root:
            return path
    allowed = ", ".join(clean_roots) or "(none configured)"
    raise PathNotAllowed(f"{path!r} is outside the hypervisor's directories ({allowed})")
