"""The scheduler layer shared by every plugin that touches the batch system (queue_info, psij, ...).

Not a plugin itself: a library inside ``radical_edge_plugins``.  Its modules:
``states`` (the one job-state vocabulary), ``run`` (scheduler commands as async
subprocesses with timeouts and clear errors).
"""

from .run import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    CommandMissing,
    CommandResult,
    CommandTimeout,
    SchedulerError,
    run_command,
)
from .states import JobState, pbs_state, psij_state, slurm_state

__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandFailed",
    "CommandMissing",
    "CommandResult",
    "CommandTimeout",
    "JobState",
    "SchedulerError",
    "pbs_state",
    "psij_state",
    "run_command",
    "slurm_state",
]
