"""tune_allocator(): a tunnel's big buffers come from the heap, not from a fresh mapping each (glibc)."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from radical_edge_tunnel import tune_allocator

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's"
)

SCRIPT = """
import sys
from radical_edge_tunnel import tune_allocator

def mappings():
    found = {}
    for line in open("/proc/self/maps"):
        fields = line.split()
        found[fields[0]] = fields[5] if len(fields) > 5 else ""
    return found

tuned = tune_allocator() if sys.argv[1] == "tuned" else None
before = mappings()
buffer = bytearray(3 << 20)  # a few MiB: a joined write, a big frame
print(tuned, sorted({name or "anonymous" for key, name in mappings().items() if key not in before}))
"""


def run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_tuned_process_takes_big_buffers_from_the_heap() -> None:
    assert run("plain") == "None ['anonymous']"  # glibc's default: a fresh mapping (faulted in, zeroed)
    assert run("tuned") == "True ['[heap]']"


def test_tune_process_where_there_is_no_libc_to_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows ``ctypes.CDLL(None)`` raises TypeError (CPython issue 83424), not OSError: every
    ``radical-edge`` verb calls tune_process() first, so the allocator's part does nothing there."""

    def windows_cdll(name: object, *args: object, **kwargs: object) -> object:
        if name is None:
            raise TypeError("argument of type 'NoneType' is not iterable")  # what ctypes does on Windows
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", windows_cdll)
    assert tune_allocator() is False
