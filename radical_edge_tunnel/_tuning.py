"""Process settings of one of our processes that moves data through a tunnel: allocator, garbage collector,
socket reads, and the open-file limit.

Called first thing by the bridge's and the edge's command lines, the demo,
the ``radical-edge`` verbs (``put``, ``get``, ``cp``... run the SDK in their
own process), the benchmark's own process (its clients) and its server
processes (its direct server and reference servers too, so no comparison is
flattered).  These settings are the process's, so a library user's process
(the SDK in someone's application) is left as it is: a script that moves
large files can call it first.
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


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise this process's soft limit on open files towards ``wanted`` (never past the hard limit, never
    lower); the soft limit now, or None where there is none (unlimited, or no such limit on this platform)."""
    try:
        import resource  # noqa: PLC0415  (POSIX only)
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # the limit stays as it was: the caller sees it in the answer
    return None if soft == resource.RLIM_INFINITY else int(soft)
