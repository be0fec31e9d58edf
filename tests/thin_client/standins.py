"""Stand-in viewer programs for tests where no real server of that protocol runs (RDP, Horizon).

A stand-in records its argv and everything it reads on stdin to ``<name>.json``
next to itself, then stays up until ``<name>.quit`` appears, like a viewer that
runs until the user closes it.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = """\
#!{python}
import json, os, sys, time
record = {{"argv": sys.argv, "stdin": sys.stdin.read()}}
with open({record!r} + ".tmp", "w") as out:
    json.dump(record, out)
os.rename({record!r} + ".tmp", {record!r})
while not os.path.exists({quit!r}):
    time.sleep(0.05)
sys.exit({status})
"""


class StandInViewer:
    def __init__(self, directory: Path, name: str, *, status: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        self.record_path = directory / f"{name}.json"
        self.quit_path = directory / f"{name}.quit"
        self.path.write_text(
            SCRIPT.format(
                python=sys.executable, record=str(self.record_path), quit=str(self.quit_path), status=status
            )
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    @property
    def started(self) -> bool:
        return self.record_path.exists()

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record_path.read_text())
        return data

    def close(self) -> None:
        """The user closes the viewer."""
        self.quit_path.touch()
