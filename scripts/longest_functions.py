#!/usr/bin/env python3
"""The longest functions of a source tree, longest first: where a split would help the reader most.

    python3 scripts/longest_functions.py [DIR] [--most N]

A function's length is its lines from ``def`` to its last line (docstring, comments and
blank lines included: what a reader scrolls through); nested functions count in their
parent too, and are listed on their own as well.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import NamedTuple


class Function(NamedTuple):
    lines: int
    path: str
    line: int
    name: str


def functions(root: Path) -> list[Function]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                found.append(Function(length, str(path), node.lineno, node.name))
    return sorted(found, key=lambda f: (-f.lines, f.path, f.line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="app", type=Path)
    parser.add_argument("--most", type=int, default=10)
    args = parser.parse_args()
    for function in functions(args.root)[: args.most]:
        print(f"{function.lines:5d}  {function.path}:{function.line}  {function.name}")


if __name__ == "__main__":
    main()
