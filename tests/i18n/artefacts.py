"""Where tests keep what a person may want to look at afterwards (screenshots of translated screens).

``$KVMVDI_TEST_ARTEFACTS`` or ``var/test-artefacts`` in the checkout (ignored by git); CI can
archive the directory.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def artefact(name: str) -> Path:
    """A path for the artefact ``name`` (e.g. "i18n/portal-lt.png"); its directory exists."""
    root = Path(os.environ.get("KVMVDI_TEST_ARTEFACTS", REPO / "var" / "test-artefacts"))
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
