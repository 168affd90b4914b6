"""One call that sets up a long-running tunnel process: allocator, garbage collector, socket reads.

Called first thing by the bridge's and the edge's command lines, the demo,
and the benchmark's server processes (its direct server and reference
servers too, so no comparison is flattered).  These settings are the
process's, so a library user's process (the SDK in someone's application)
is left as it is.
"""

from __future__ import annotations

from ._allocator import tune_allocator
from ._gc import tune_gc
from ._reads import tune_socket_reads


def tune_process() -> None:
    """:func:`tune_allocator` (before the larger reads, whose buffers it keeps in the heap), :func:`tune_gc`,
    :func:`tune_socket_reads`."""
    tune_allocator()
    tune_gc()
    tune_socket_reads()
