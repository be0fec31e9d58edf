"""``python -m bench`` (``make bench``): run every benchmark, one process each.

A benchmark is a module ``bench/<name>.py`` with a ``main()``; ``bench/<name>_<part>.py``
next to a benchmark ``<name>`` is one of its helpers, not a benchmark (nor is a module
without ``main()``, such as ``report``). Each benchmark prints its table and saves it
under bench/results/ (``bench.report.save``). The soak (``make soak``) runs on its own:
it takes ten minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run by their own make target, not by ``make bench``.
ON_THEIR_OWN = {"soak"}


def benchmarks() -> list[str]:
    stems = {path.stem for path in HERE.glob("*.py") if not path.stem.startswith("_")}
    helpers = {stem for stem in stems if any(stem.startswith(f"{other}_") for other in stems)}
    runnable = stems - helpers - ON_THEIR_OWN
    return sorted(stem for stem in runnable if "\ndef main(" in (HERE / f"{stem}.py").read_text())


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
