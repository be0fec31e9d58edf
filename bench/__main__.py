"""``python -m bench`` (``make bench``): run every benchmark, one process each.

A benchmark is a module ``bench/<name>.py`` without an underscore in its name and with a
``main()``; ``bench/<name>_*.py`` modules are its helpers. Each prints its table and
saves it under bench/results/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> list[str]:
    return sorted(
        path.stem for path in HERE.glob("*.py") if "_" not in path.stem and "\ndef main(" in path.read_text()
    )


def main() -> int:
    failed = []
    for name in benchmarks():
        print(f"== bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
