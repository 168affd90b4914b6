"""Keep a bulk transfer's buffers in the heap (glibc), instead of a fresh ``mmap`` for each.

A tunnel moves data in buffers of 64 KiB to a few MiB (TLS reads, frames,
joined writes), each allocated and freed in turn.  glibc serves blocks over
its ``mmap`` threshold (128 KiB at first) with a fresh mapping and gives the
heap's top back to the system past its trim threshold: either way every new
buffer's pages are faulted in and zeroed again.  Measured on a 512 MiB
download: about 100,000 page faults in the bridge (and, with the accelerated
frame builder, 290,000 in the edge); with the thresholds below, about 600.
The bridge's CPU per GiB fell from 3.45 to 3.1 s.

Called (through ``tune_process()``) by the bridge's and the edge's command
lines, the ``radical-edge`` verbs and the benchmark's processes, the direct
server included; a library user's process is left as it is.  The SDK
uploading 256 MiB in an untuned process took about 65,000 page faults (one
per 4 KiB page it moved), tuned about 500.  What it costs: up to 32 MiB of
freed heap may stay mapped after a burst.
"""

from __future__ import annotations

import ctypes

#: mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap
MMAP_THRESHOLD = 4 << 20
#: free memory at the heap's top kept mapped up to this size
TRIM_THRESHOLD = 32 << 20


def tune_allocator() -> bool:
    """Set the thresholds (glibc only; elsewhere nothing happens); whether they were set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows (CPython issue 83424)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
