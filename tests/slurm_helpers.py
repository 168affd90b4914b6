"""The real Slurm for the tests: the ``slurm`` fixture (skip or fail when there is none) and job helpers.

Tests that need the batch system take the ``slurm`` fixture (it is imported into ``conftest.py``, so
no import is needed).  When ``sinfo`` is not installed, or the controller does not answer, the test is
**skipped** with the reason; with ``RADICAL_EDGE_REQUIRE_SLURM=1`` in the environment (CI sets it
after ``scripts/slurm-up`` succeeded) it **fails** instead, so a broken cluster can never pass as a
skip.  Every job a test submits through the fixture is cancelled when the test ends.

    def test_something(slurm):
        job_id = slurm.sbatch("--wrap", "sleep 30", partition="debug")
        slurm.wait_state(job_id, {"RUNNING"})

    async def test_async(slurm):
        job_id = await slurm.asbatch("--wrap", "sleep 30")     # in a worker thread: the loop keeps going

``slurm.accounting`` says whether slurmdbd answers (sacct / sacctmgr); ``slurm.require_accounting()``
skips (or fails, under the same variable) a test that needs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

#: set to 1 (CI does, once Slurm is up) to turn "no Slurm here" from a skip into a failure
REQUIRE_ENV = "RADICAL_EDGE_REQUIRE_SLURM"
#: seconds any Slurm command of the helpers may take
COMMAND_TIMEOUT = 20.0


def slurm_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when Slurm is required (``RADICAL_EDGE_REQUIRE_SLURM=1``)."""
    if slurm_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: Slurm must be available)", pytrace=False)
    pytest.skip(reason)


def run(*argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command (no shell) and return its output; ``check`` raises with stderr on failure."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _probe() -> str | None:
    """Why Slurm cannot be used here, or ``None`` when it answers."""
    if shutil.which("sinfo") is None:
        return "Slurm is not installed here (no sinfo on PATH); scripts/slurm-up starts a single-node cluster"
    try:
        ping = run("scontrol", "ping", check=False, timeout=10)
        info = run("sinfo", "-h", "-o", "%P %a", check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the Slurm controller does not answer ({exc})"
    if "UP" not in ping.stdout or info.returncode != 0:
        detail = (info.stderr or ping.stdout or ping.stderr).strip()
        return f"the Slurm controller does not answer: {detail}"
    if not info.stdout.strip():
        return "Slurm answers but has no partition"
    return None


def _accounting() -> bool:
    try:
        return run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster", check=False, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Slurm:
    """The cluster the tests run on, and the jobs this test submitted (cancelled at the end)."""

    user: str
    partitions: list[str]
    default_partition: str
    accounting: bool
    #: where jobs run and write their default slurm-N.out (never the checkout: tests leave no trace)
    workdir: str = "/tmp"
    submitted: list[str] = field(default_factory=list)

    def require_accounting(self) -> None:
        if not self.accounting:
            skip_or_fail("Slurm accounting (slurmdbd) is not running: sacctmgr fails")

    def sbatch(self, *args: str, partition: str | None = None, name: str = "re-test", **options: Any) -> str:
        """``sbatch --parsable ARGS`` (e.g. ``"--wrap", "sleep 30"``); returns the job id, remembered for cleanup.

        ``options`` become ``--key=value`` (underscores as dashes): ``time="1"``, ``output="/tmp/x.out"``.
        """
        argv = ["sbatch", "--parsable", f"--job-name={name}"]
        if "chdir" not in options:
            argv.append(f"--chdir={self.workdir}")
        if partition:
            argv.append(f"--partition={partition}")
        argv += [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        out = run(*argv, *args).stdout.strip()
        job_id = out.split(";", 1)[0]  # "123" or "123;cluster"
        assert job_id.isdigit(), f"sbatch said {out!r}"
        self.submitted.append(job_id)
        return job_id

    async def asbatch(self, *args: str, **options: Any) -> str:
        """:meth:`sbatch` in a worker thread (for async tests: the event loop keeps running)."""
        return await anyio.to_thread.run_sync(lambda: self.sbatch(*args, **options))

    def scancel(self, *job_ids: str) -> None:
        if job_ids:
            run("scancel", *job_ids, check=False)

    def state(self, job_id: str) -> str | None:
        """Slurm's state of the job (``PENDING``, ``RUNNING``, ``CANCELLED``...), ``None`` once squeue forgot it."""
        out = run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False).stdout.split()
        return out[0] if out else None

    def wait_state(self, job_id: str, states: set[str], timeout: float = 30.0) -> str:
        """Poll until the job is in one of ``states`` (Slurm's words); ``AssertionError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {state}, not one of {sorted(states)} after {timeout:g} s")
            time.sleep(0.2)

    async def await_state(self, job_id: str, states: set[str], timeout: float = 30.0) -> str:
        """:meth:`wait_state` in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.wait_state(job_id, states, timeout))

    def cleanup(self) -> None:
        self.scancel(*self.submitted)
        self.submitted.clear()


@pytest.fixture(scope="session")
def _slurm_cluster() -> dict[str, Any]:
    """Probed once per test session: the cluster's partitions and whether accounting runs (or the reason not)."""
    reason = _probe()
    if reason is not None:
        return {"reason": reason}
    lines = run("sinfo", "-h", "-o", "%P").stdout.split()
    partitions = [p.rstrip("*") for p in lines]
    default = next((p.rstrip("*") for p in lines if p.endswith("*")), partitions[0])
    user = run("id", "-un").stdout.strip()
    return {"reason": None, "partitions": partitions, "default": default, "user": user, "accounting": _accounting()}


@pytest.fixture
def slurm(_slurm_cluster: dict[str, Any], tmp_path: Path) -> Iterator[Slurm]:
    """The real Slurm: skipped with the reason when there is none (failed under ``RADICAL_EDGE_REQUIRE_SLURM=1``);
    every job submitted through it is cancelled when the test ends."""
    if _slurm_cluster["reason"] is not None:
        skip_or_fail(_slurm_cluster["reason"])
    cluster = Slurm(
        user=_slurm_cluster["user"],
        partitions=list(_slurm_cluster["partitions"]),
        default_partition=_slurm_cluster["default"],
        accounting=_slurm_cluster["accounting"],
        workdir=str(tmp_path),
    )
    try:
        yield cluster
    finally:
        cluster.cleanup()


__all__ = ["REQUIRE_ENV", "Slurm", "run", "skip_or_fail", "slurm", "slurm_required"]
