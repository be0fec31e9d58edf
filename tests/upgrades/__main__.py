"""``python -m tests.upgrades write <revision>``: write the upgrade fixture of a new migration."""

from __future__ import annotations

import argparse
import sys

from tests.upgrades.fixtures import REPO, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.upgrades", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write", help="write data/<revision>.json").add_argument("revision")
    args = parser.parse_args(argv)
    path = write(args.revision)
    print(f"wrote {path.relative_to(REPO)}: review its new rows and values, then commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
