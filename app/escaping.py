"""Text from outside (a typed user name, a header) made safe for one-line logs and audit records.

Control characters would let a typed name forge a second log line, move a
terminal's cursor or recolour it (ANSI escapes), and bidirectional overrides
would make a line read differently from what it contains. Each one is written
as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), so the record still says
exactly what was sent.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 and C1 controls, DEL, line and paragraph separators, bidirectional embeddings and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control or direction-changing character escaped; the rest unchanged."""
    return _UNSAFE.sub(_escape, text)
