"""Text from the network, made safe to show on a terminal.

Names, paths, states and error details come from edges, and an edge (or a file on it) may be hostile:
a name with ``ESC`` sequences could retitle the terminal, clear it, move the cursor or (on some
terminals) write the clipboard; a ``\\r`` or a newline could overwrite or forge a line of output; a
bidirectional override (U+202E) could make ``txt.exe`` read as ``exe.txt``.  :func:`shown` writes every
such character as an escape (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``) so that it is seen, never obeyed.

Only what the verbs print for a person goes through it: ``--json`` output is the data, exact (JSON
escapes control characters itself), and so are the bytes of ``get EDGE:PATH -`` and the output of
``submit --follow`` (a job's own output, passed through as ``ssh`` or ``tail -f`` would).
"""

from __future__ import annotations

import re
from typing import TextIO

#: C0 and C1 controls, DEL, lone surrogates (not encodable: printing one would fail), the line and paragraph
#: separators and the bidirectional formatting characters
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def shown(value: object, *, keep: str = "") -> str:
    """``value`` as text for a terminal: control and formatting characters escaped (``keep``: those left as
    they are, e.g. ``"\\n\\t"`` for a multi-line body)."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


def isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for one without ``isatty``, or closed)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["isatty", "shown"]
