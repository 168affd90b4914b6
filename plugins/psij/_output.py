"""Job output files: reading them from a byte offset, and the cleanup policy (blocking: run in a worker thread).

Text goes out as JSON strings.  A read never ends inside a UTF-8 character
(the incomplete tail waits for the next read, unless the file is complete), and
a byte that is not UTF-8 becomes ``?``: so ``len(data.encode())`` is always the
number of bytes read, and a client can keep byte offsets from the text alone.

Cleanup: output files (``<job_id>.out|.err``) in the plugin's directory and
PSI/J's leftovers in its work directory are deleted once they have not been
written for ``keep_days`` days, unless they belong to a job that is not final;
records of final jobs go with them.  The plugin runs it at start and every day.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_QMARK = "radical_edge_psij_qmark"


def _one_qmark_per_byte(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return "?" * (exc.end - exc.start), exc.end


codecs.register_error(_QMARK, _one_qmark_per_byte)


def decode(data: bytes, *, complete: bool) -> tuple[str, int]:
    """``data`` as text and how many of its bytes that text covers.

    Unless ``complete``, an unfinished UTF-8 character at the end is left for
    the next read (at most 3 bytes).
    """
    end = len(data)
    if not complete:
        # step back over continuation bytes to the last lead byte; keep it only if its character is whole
        i = end - 1
        while i >= 0 and end - i <= 4 and (data[i] & 0xC0) == 0x80:
            i -= 1
        if i >= 0 and end - i <= 4:
            lead = data[i]
            need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
            if need > 1 and end - i < need:
                end = i
    return data[:end].decode("utf-8", _QMARK), end


@dataclass(frozen=True)
class Chunk:
    offset: int  # byte offset of the text in the file
    data: str
    size: int  # bytes the text covers
    skipped: int = 0  # bytes jumped over before ``offset`` (output came faster than the rate limit)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int, limit: int, *, complete: bool) -> tuple[str, int]:
    """Up to ``limit`` bytes of ``path`` from ``offset``, as text; and the offset after them.

    A missing file reads as empty.  ``complete``: the writer is done (a split
    character at the end of the file is not waited for).
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit + 1)
    except FileNotFoundError:
        return "", offset
    more = len(data) > limit
    data = data[:limit]
    text, used = decode(data, complete=complete and not more)
    return text, offset + used


def tail(path: Path, offset: int, chunk: int, backlog: int, *, complete: bool) -> Chunk | None:
    """The next piece of ``path`` after ``offset`` for a ``job_output`` event, or ``None`` if nothing new.

    At most ``chunk`` bytes; if more than ``backlog`` bytes wait, the oldest are
    skipped (the event says how many) so a fast writer cannot make the events
    fall ever further behind.  ``status`` still reads everything from any offset.
    """
    size = file_size(path)
    if size < offset:  # truncated or replaced: start over
        offset = 0
    if size <= offset:
        return None
    skipped = 0
    if size - offset > backlog:
        skipped = size - chunk - offset
        offset = size - chunk
    text, end = read_from(path, offset, chunk, complete=complete)
    if end == offset:
        return None
    return Chunk(offset, text, end - offset, skipped)


def cleanup(directories: Iterable[Path], keep_seconds: float, keep: set[Path], now: float | None = None) -> list[Path]:
    """Delete the regular files in ``directories`` (and two levels down: ``work/<executor>/``) not modified
    for ``keep_seconds``, except those in ``keep``; returns what was deleted."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    keep = {p.resolve() for p in keep}

    def visit(directory: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < 2:
                        visit(path, depth + 1)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                if now - entry.stat(follow_symlinks=False).st_mtime < keep_seconds:
                    continue
            except OSError:
                continue
            if path.resolve() in keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)

    for directory in directories:
        visit(Path(directory), 0)
    return removed


__all__ = ["Chunk", "cleanup", "decode", "file_size", "read_from", "tail"]
