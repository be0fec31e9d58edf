"""Golden XML files: a builder's output compared with a file under ``tests/vms/golden/``.

``KVMVDI_UPDATE_GOLDEN=1`` rewrites the files instead (then review the diff before committing).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def assert_golden(name: str, produced: ET.Element | str) -> None:
    if isinstance(produced, ET.Element):
        ET.indent(produced)
        text = ET.tostring(produced, encoding="unicode")
    else:
        text = produced
    text = text.rstrip("\n") + "\n"
    path = GOLDEN_DIR / f"{name}.xml"
    if os.environ.get("KVMVDI_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run once with KVMVDI_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name}: the builder's XML differs from {path.name}"
