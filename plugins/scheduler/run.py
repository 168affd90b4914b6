"""Running scheduler commands: async subprocesses, never a shell, always a timeout, clear errors.

Every plugin runs ``sbatch``, ``squeue``, ``qstat``... through :func:`run_command`, so
none of them blocks the event loop, hangs forever, or crashes on a missing binary.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

#: seconds a scheduler command may take before it is killed
DEFAULT_TIMEOUT = 30.0


class SchedulerError(Exception):
    """A scheduler command could not give an answer (missing, timed out, failed)."""


class CommandMissing(SchedulerError):
    """The command is not installed (not on PATH)."""


class CommandTimeout(SchedulerError):
    """The command took longer than its timeout and was killed."""


class CommandFailed(SchedulerError):
    """The command exited non-zero; ``stderr`` carries the scheduler's message."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        message = (stderr or stdout).strip() or f"exit status {returncode}"
        super().__init__(f"{argv[0]}: {message}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


#: what code that runs scheduler commands takes to do it: :func:`run_command` (the default), or a
#: wrapper in tests (counting calls, answering from recorded output)
Runner = Callable[..., Awaitable[CommandResult]]


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell) and return its output as text.

    Raises :class:`CommandMissing` if ``argv[0]`` is not installed,
    :class:`CommandTimeout` after ``timeout`` seconds (the process is killed),
    and, with ``check``, :class:`CommandFailed` for a non-zero exit status.
    """
    if not argv:
        raise ValueError("empty command")
    if shutil.which(argv[0], path=env.get("PATH") if env is not None else None) is None:
        raise CommandMissing(f"{argv[0]}: command not found (is the scheduler's client installed and on PATH?)")
    try:
        with anyio.fail_after(timeout if math.isfinite(timeout) else None):
            done = await anyio.run_process(list(argv), input=input, check=False, env=dict(env) if env else None)
    except TimeoutError:
        raise CommandTimeout(f"{argv[0]}: no answer within {timeout:g} s") from None
    except FileNotFoundError:  # removed between the which() and the exec
        raise CommandMissing(f"{argv[0]}: command not found") from None
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    if check and done.returncode != 0:
        raise CommandFailed(argv, done.returncode, stdout, stderr)
    return CommandResult(list(argv), done.returncode, stdout, stderr)


class CommandBackend:
    """What every scheduler backend shares: how it runs its commands (``run``, no shell, each with
    ``timeout`` and ``env``, e.g. ``SLURM_CONF`` for another cluster) and its clock."""

    name = "none"

    def __init__(
        self,
        *,
        run: Runner = run_command,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._run = run
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self.clock = clock

    async def command(self, *argv: str, check: bool = True) -> CommandResult:
        return await self._run(list(argv), timeout=self.timeout, env=self.env, check=check)


__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandBackend",
    "CommandFailed",
    "CommandMissing",
    "CommandResult",
    "CommandTimeout",
    "Runner",
    "SchedulerError",
    "run_command",
]
