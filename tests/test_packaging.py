"""Both packages declare their licence the way current setuptools wants it: an SPDX expression
(the old ``{text = ...}`` table makes every set-up print a deprecation warning)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("project", ["pyproject.toml", "thin_client/pyproject.toml"])
def test_the_licence_is_an_spdx_expression_for_a_setuptools_that_reads_it(project: str) -> None:
    data = tomllib.loads((REPO / project).read_text())
    assert data["project"]["license"] == "GPL-3.0-or-later"
    requirement = next(r for r in data["build-system"]["requires"] if r.startswith("setuptools"))
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", requirement)
    assert minimum is not None and int(minimum.group(1)) >= 77, "SPDX licences need setuptools 77"
