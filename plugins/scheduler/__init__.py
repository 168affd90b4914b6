"""The scheduler layer shared by every plugin that touches the batch system (queue_info, psij, ...).

Not a plugin itself: a library inside ``radical_edge_plugins``.  Its modules:
``states`` (the one job-state vocabulary), ``run`` (scheduler commands as async
subprocesses with timeouts and clear errors), ``records`` (the job, queue and
allocation records every backend produces), ``slurm`` and ``pbs`` (parsers as pure
functions of the commands' output, and the backends that run them), ``detect``
(which scheduler this host has), ``allocation`` (the batch job the edge runs in),
``cache`` (one coalescing TTL cache shared by all sessions and clients).
"""

from .run import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    CommandMissing,
    CommandResult,
    CommandTimeout,
    Runner,
    SchedulerError,
    run_command,
)
from .states import JobState, pbs_state, psij_state, rhapsody_state, slurm_state

__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandFailed",
    "CommandMissing",
    "CommandResult",
    "CommandTimeout",
    "JobState",
    "Runner",
    "SchedulerError",
    "pbs_state",
    "psij_state",
    "rhapsody_state",
    "run_command",
    "slurm_state",
]
