"""Stand-in viewer programs for tests where no real server of that protocol runs (RDP, Horizon).

Run number N of a stand-in records its argv, pid and everything it reads on
stdin to ``<name>.<N>.json`` next to itself, then stays up until
``<name>.<N>.quit`` appears, like a viewer that runs until the user closes it
(or until the launcher that started it dies).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = """\
#!{python}
import itertools, json, os, sys, time
base = {base!r}
for run in itertools.count(1):
    try:
        fd = os.open(f"{{base}}.{{run}}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        continue
    os.close(fd)
    break
record = {{"argv": sys.argv, "pid": os.getpid(), "stdin": sys.stdin.read()}}
with open(f"{{base}}.{{run}}.json.tmp", "w") as out:
    json.dump(record, out)
os.rename(f"{{base}}.{{run}}.json.tmp", f"{{base}}.{{run}}.json")
parent = os.getppid()
# Ends when closed, or when the launcher that started it is gone (never left behind by a failed test).
# (The stand-in's own idle loop, as a viewer idles while its session runs: no test waits here.)
while not os.path.exists(f"{{base}}.{{run}}.quit") and os.getppid() == parent:
    time.sleep(0.05)
sys.exit({status})
"""


class StandInViewer:
    def __init__(self, directory: Path, name: str, *, status: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        self.base = directory / name
        self.path.write_text(SCRIPT.format(python=sys.executable, base=str(self.base), status=status))
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def _file(self, run: int, suffix: str) -> Path:
        return self.base.with_name(f"{self.base.name}.{run}.{suffix}")

    def runs(self) -> int:
        """How many times the viewer has been started (and has read its input)."""
        return len(list(self.base.parent.glob(f"{self.base.name}.*.json")))

    @property
    def started(self) -> bool:
        return self.runs() >= 1

    def record(self, run: int = 1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._file(run, "json").read_text())
        return data

    def close(self, run: int = 1) -> None:
        """The user closes the viewer."""
        self._file(run, "quit").touch()
