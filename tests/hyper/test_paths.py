"""Path confinement: commands only ever touch the hypervisor's own directories."""

from __future__ import annotations

import pytest

from app.hyper.errors import PathNotAllowed
from app.hyper.paths import confine

ROOTS = ("/srv/vdi/images", "/srv/vdi/volatile", "/srv/vdi/iso")


@pytest.mark.parametrize(
    "path",
    [
        "/srv/vdi/images/desktop-01.qcow2",
        "/srv/vdi/volatile/pool a/overlay 1.qcow2",
        "/srv/vdi/iso/debian-12.7.0-amd64-netinst.iso",
        "/srv/vdi/images/$(touch /tmp/pwned).qcow2",
    ],
)
def test_paths_inside_the_hypervisor_directories_are_accepted_unchanged(path: str) -> None:
    assert confine(path, ROOTS) == path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/srv/vdi/images/../../../etc/shadow", "not normalized"),
        ("/srv/vdi/images/./disk.qcow2", "not normalized"),
        ("/srv/vdi/images//disk.qcow2", "not normalized"),
        ("/srv/vdi/images/sub/", "not normalized"),
        ("//srv/vdi/images/disk.qcow2", "not normalized"),
        ("srv/vdi/images/disk.qcow2", "not an absolute path"),
        ("/srv/vdi/imagesX/disk.qcow2", "outside"),
        ("/etc/passwd", "outside"),
        ("/srv/vdi/images", "outside"),
        ("/srv/vdi/images/disk\n.qcow2", "control characters"),
        ("", "empty"),
    ],
)
def test_paths_outside_or_not_normalized_are_refused_with_the_reason(path: str, why: str) -> None:
    with pytest.raises(PathNotAllowed, match=why):
        confine(path, ROOTS)


def test_a_directory_itself_is_accepted_only_when_asked_for() -> None:
    assert confine("/srv/vdi/iso", ROOTS, allow_root=True) == "/srv/vdi/iso"
    with pytest.raises(PathNotAllowed):
        confine("/srv/vdi/iso", ROOTS)
