"""Child edges: an edge service started inside a batch job that dials the parent's bridge.

The plugin writes, per child ``{parent}.{n}``, under ``<psij dir>/<parent>/children/`` (mode 0700):

* ``{child}.json`` (0600): what the launcher (:mod:`._launch`) needs -- URL, CA file, token FILE
  path, plugins, ready file, tunnel.  Never the token itself.
* ``{child}.token`` (0600): a copy of the token, only when the parent's token did not come from a
  token file (given, or from the environment); deleted when the child's job ended.
* ``{child}.ready``: written by the child edge (``--ready-file``) after the bridge accepted it.

States (``tunnel_status``): ``pending`` (job submitted, not registered yet), ``active`` (the ready
file appeared), ``done`` (the job ended after registering: DONE or CANCELLED), ``failed`` (the job
ended before registering, or FAILED).  A final state comes with the job's state, exit code and the
tails of its output.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scheduler import JobState
from ._state import JobRecord

#: the ``tunnel_status`` states
PENDING, ACTIVE, DONE, FAILED = "pending", "active", "done", "failed"
FINAL_STATES = frozenset({DONE, FAILED})
#: the bytes of each output stream a final ``tunnel_status`` carries
TAIL_BYTES = 4096
_PLUGINS = re.compile(r"[A-Za-z0-9_.,-]+")
SUBMIT_KEYS = frozenset({"job_spec", "executor", "plugins", "tunnel", "stream_output"})
TUNNEL_KEYS = frozenset({"via", "ssh_options"})


class ChildError(ValueError):
    """A ``submit_tunneled`` body that cannot be used (the route answers 422)."""


@dataclass
class ChildRecord:
    edge: str
    owner: str
    sid: str
    job: JobRecord
    ready_file: Path
    config_file: Path
    #: the token copy this plugin wrote (None: the child reads the parent's own token file)
    token_copy: Path | None = None
    via: str | None = None
    state: str = PENDING
    reason: str | None = None
    registered_at: float | None = None
    updated: float = field(default_factory=time.time)
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def status(self) -> dict[str, Any]:
        job = self.job
        return {
            "edge": self.edge,
            "job_id": job.job_id,
            "native_id": job.native_id,
            "executor": job.executor,
            "via": self.via,
            "state": self.state,
            "job_state": job.state.value if job.state else JobState.PENDING.value,
            "exit_code": job.exit_code,
            "reason": self.reason,
            "registered": self.registered_at,
            "updated": self.updated,
            "stdout_tail": self.stdout_tail,
            "stderr_tail": self.stderr_tail,
        }

    def next_state(self, ready: bool) -> tuple[str, str | None] | None:
        """The new ``(state, reason)`` given whether the ready file exists now; None if unchanged."""
        job = self.job
        if self.final:
            return None
        if ready and self.state == PENDING and not job.final:
            return ACTIVE, None
        if not job.final:
            return None
        assert job.state is not None
        code = f" (exit code {job.exit_code})" if job.exit_code is not None else ""
        what = f"the job ended {job.state.value}{code}"
        if not ready and self.registered_at is None:
            return FAILED, f"{what} before the child edge registered" + (f": {job.message}" if job.message else "")
        if job.state is JobState.FAILED:
            return FAILED, what + (f": {job.message}" if job.message else "")
        return DONE, what


def check_body(body: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """``(job_spec, plugins, tunnel)`` of a ``submit_tunneled`` body; :class:`ChildError` if unusable."""
    unknown = sorted(set(body) - SUBMIT_KEYS)
    if unknown:
        raise ChildError(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(SUBMIT_KEYS))})")
    spec = body.get("job_spec") or {}
    if not isinstance(spec, dict):
        raise ChildError("job_spec must be an object")
    for key in ("executable", "arguments"):
        if key in spec:
            raise ChildError(f"job_spec.{key} is not given for a child edge: the job runs the edge's launcher")
    plugins = body.get("plugins", "sysinfo")
    if not isinstance(plugins, str) or not _PLUGINS.fullmatch(plugins):
        raise ChildError("plugins must be 'all' or a comma list of plugin names (letters, digits, _ . -)")
    tunnel = body.get("tunnel")
    if tunnel is not None:
        if not isinstance(tunnel, dict):
            raise ChildError('tunnel must be an object: {"via": "login-host", "ssh_options": [...]}')
        unknown = sorted(set(tunnel) - TUNNEL_KEYS)
        if unknown:
            raise ChildError(f"unknown tunnel field(s) {', '.join(map(repr, unknown))} (known: via, ssh_options)")
        via = tunnel.get("via")
        if not isinstance(via, str) or not via.strip() or via.startswith("-") or any(c.isspace() for c in via):
            raise ChildError("tunnel.via must be a host name (the SSH destination, e.g. 'login1' or 'me@login1')")
        options = tunnel.get("ssh_options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise ChildError("tunnel.ssh_options must be a list of strings (ssh's arguments)")
        tunnel = {"via": via, "ssh_options": list(options)}
    return dict(spec), plugins, tunnel


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (made so, never readable by others in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=1) + "\n")


def last_number(directory: Path, parent: str) -> int:
    """The highest ``n`` of the ``{parent}.{n}.json`` configs in ``directory`` (0 if none)."""
    pattern = re.compile(re.escape(parent) + r"\.(\d+)\.json")
    best = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            best = max(best, int(match.group(1)))
    return best


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    """The last ``size`` bytes of ``path`` as text ("" if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
