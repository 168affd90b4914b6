"""The HPC verbs of ``radical-edge``: queues, submit (``--follow``), jobs, cancel (through the SDK).

``queues`` reads the edge's ``queue_info`` plugin; ``submit``, ``jobs`` and
``cancel`` its ``psij`` plugin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from typing import Any, TextIO, TypeVar

import anyio

from radical_edge_client import (
    AsyncBridgeClient,
    AsyncPluginClient,
    AsyncPSIJClient,
    AsyncQueueInfoClient,
    BridgeProtocolError,
    JobUpdate,
)

from ._term import shown

P = TypeVar("P", bound=AsyncPluginClient)

#: ``--time`` in sbatch's forms (see :func:`duration_seconds`)
_DAYS = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``--time`` as seconds, in the forms ``sbatch --time`` takes, plus unit suffixes.

    ``MINUTES``, ``MINUTES:SECONDS``, ``HOURS:MINUTES:SECONDS``, ``DAYS-HOURS``,
    ``DAYS-HOURS:MINUTES``, ``DAYS-HOURS:MINUTES:SECONDS``; or a number with
    ``s``, ``m``, ``h`` or ``d`` (``90s``, ``2h``).
    """
    value = text.strip().lower()
    if value and value[-1] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        seconds = float(value[:-1]) * _UNITS[value[-1]]
    else:
        match = _DAYS.match(value)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time limit: give MINUTES, [H:]M:S, D-H[:M[:S]] or a number with s/m/h/d"
            )
        days, a, b, c = match.groups()
        parts = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:  # D-H, D-H:M, D-H:M:S
            parts += [0] * (3 - len(parts))
            seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        elif len(parts) == 1:  # MINUTES
            seconds = parts[0] * 60
        elif len(parts) == 2:  # MINUTES:SECONDS
            seconds = parts[0] * 60 + parts[1]
        else:  # HOURS:MINUTES:SECONDS
            seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a time limit must be positive")
    return int(seconds)


def add_parsers(sub: Any, connection_options: Any) -> None:
    """The sub-commands of this module, on the ``radical-edge`` parser."""
    queues = sub.add_parser(
        "queues",
        help="the batch queues (partitions) of an edge: EDGE",
        description="List the batch queues (partitions) of an edge's scheduler, through its queue_info plugin. "
        "A '*' marks the default queue.",
    )
    queues.add_argument("edge")
    queues.add_argument(
        "--user", default=None, help="the queues this user may use (default: the edge's user; '*': every queue)"
    )
    queues.add_argument("--force", action="store_true", help="ask the scheduler now, not the plugin's cache")
    connection_options(queues)

    submit = sub.add_parser(
        "submit",
        help="submit a job: EDGE [options] -- CMD [ARGS...]",
        description="Submit CMD ARGS as a job on an edge, through its psij plugin, and print the job id. "
        "With --follow, print the job's output as it comes (its stdout to stdout, its stderr to stderr) and "
        "exit with the job's exit code (1 for a job cancelled or failed without one).",
        usage="radical-edge submit [options] EDGE -- CMD [ARGS...]",
    )
    submit.add_argument("edge")
    submit.add_argument("cmd", nargs="*", metavar="CMD", help="the program and its arguments, after --")
    submit.add_argument("--queue", "-q", default=None, help="queue (Slurm partition) to submit to")
    submit.add_argument("--account", "-A", default=None, help="account (project) to charge")
    submit.add_argument(
        "--time",
        "-t",
        type=duration_seconds,
        default=None,
        metavar="TIME",
        help="time limit, as sbatch takes it (MINUTES, H:M:S, D-H:M:S) or with a unit (90s, 2h)",
    )
    submit.add_argument("--nodes", "-N", type=int, default=None, help="number of nodes")
    submit.add_argument(
        "--executor",
        default=None,
        help="PSI/J executor: local, slurm, pbs, lsf, flux (default: the edge's batch system, else local)",
    )
    submit.add_argument("--name", "-J", default=None, help="a name for the job")
    submit.add_argument("--directory", "-D", default=None, help="working directory of the job on the edge")
    submit.add_argument(
        "--follow", "-f", action="store_true", help="print the output as it comes; exit with the job's exit code"
    )
    connection_options(submit)

    jobs = sub.add_parser(
        "jobs", help="the jobs submitted through an edge: EDGE", description="List the jobs of an edge's psij plugin."
    )
    jobs.add_argument("edge")
    connection_options(jobs)

    cancel = sub.add_parser(
        "cancel",
        help="cancel a job: EDGE JOB",
        description="Cancel a job submitted through an edge's psij plugin and print its state.",
    )
    cancel.add_argument("edge")
    cancel.add_argument("job", help="the job id that submit printed")
    cancel.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the final state (default 10)")
    connection_options(cancel)


def connect(args: Any) -> AsyncBridgeClient:
    """The SDK client the connection options name (shared by every verb)."""
    return AsyncBridgeClient(url=args.url, token=args.token, cert=args.cert)


def table(rows: list[list[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; every cell shown safely (:func:`~._term.shown`: its text may come
    from an edge)."""
    rows = [[shown(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


async def plugin_of(client: AsyncBridgeClient, edge: str, name: str, cls: type[P]) -> P:
    """The client of plugin ``name`` of ``edge`` (a session registered), which must be a ``cls``."""
    plugin = await (await client.get_edge_client(edge)).get_plugin(name)
    if not isinstance(plugin, cls):
        raise BridgeProtocolError(f"the plugin {name!r} of edge {edge!r} is not a {name} plugin")
    return plugin


async def _psij(client: AsyncBridgeClient, edge: str) -> AsyncPSIJClient:
    return await plugin_of(client, edge, "psij", AsyncPSIJClient)


# ---------------------------------------------------------------- queues


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _memory(mb: Any) -> str:
    if not isinstance(mb, int | float) or isinstance(mb, bool):
        return _text(mb)
    if mb >= 1024:
        gib = mb / 1024
        return f"{gib:.0f}G" if gib >= 10 or gib == int(gib) else f"{gib:.1f}G"
    return f"{mb:.0f}M"


def _time_limit(value: Any) -> str:
    """A time limit as Slurm shows it (``D-HH:MM:SS``); numbers are minutes, text is shown as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    minutes = int(value)
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def queue_rows(queues: dict[str, Any]) -> list[list[str]]:
    """The ``queues`` table: one row per queue, the default first-marked with ``*``."""
    rows = [["QUEUE", "STATE", "NODES(IDLE/TOTAL)", "CPUS/NODE", "MEMORY/NODE", "GPUS/NODE", "TIME LIMIT"]]
    for name, info in queues.items():
        q = info if isinstance(info, dict) else {}
        mark = "*" if q.get("default") else ""
        nodes = f"{_text(q.get('nodes_idle'))}/{_text(q.get('nodes_total'))}"
        rows.append(
            [
                f"{name}{mark}",
                _text(q.get("state")),
                nodes,
                _text(q.get("cpus_per_node")),
                _memory(q.get("mem_per_node_mb")),
                _text(q.get("gpus_per_node")),
                _time_limit(q.get("time_limit")),
            ]
        )
    return rows


async def queues(args: Any, out: TextIO = sys.stdout) -> int:
    """The queues of an edge's scheduler, as a table (``--json``: the plugin's answer)."""
    async with connect(args) as client:
        plugin = await plugin_of(client, args.edge, "queue_info", AsyncQueueInfoClient)
        info = await plugin.get_info(user=args.user, force=args.force)
    found = info.get("queues")
    if not isinstance(found, dict):
        raise BridgeProtocolError("queue_info get_info: no 'queues' object in the answer")
    if args.json:
        out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return 0
    if not found:
        out.write("no queues\n")
        return 0
    table(queue_rows(found), out)
    return 0


# ---------------------------------------------------------------- submit


def job_spec(args: Any) -> dict[str, Any]:
    """The psij ``job_spec`` of ``submit``'s arguments."""
    executable, *arguments = args.cmd
    attributes: dict[str, Any] = {}
    if args.queue:
        attributes["queue_name"] = args.queue
    if args.account:
        attributes["account"] = args.account
    if args.time is not None:
        attributes["duration"] = args.time
    if args.nodes is not None:
        attributes["node_count"] = args.nodes
    spec: dict[str, Any] = {"executable": executable, "arguments": arguments}
    if args.name:
        spec["name"] = args.name
    if args.directory:
        spec["directory"] = args.directory
    if attributes:
        spec["attributes"] = attributes
    return spec


def exit_status(update: JobUpdate) -> int:
    """The exit status of ``submit --follow`` for the job's final update."""
    code = update.exit_code
    if code is None:
        return 0 if update.state == "DONE" else 1
    if code < 0:  # killed by signal -code: as a shell reports it
        return min(128 - code, 255)
    if code == 0 and update.state != "DONE":
        return 1
    return min(code, 255)


async def submit(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Submit a job; with ``--follow`` print its output as it comes and return its exit status."""
    async with connect(args) as client:
        psij = await _psij(client, args.edge)
        submitted = await psij.submit_job(job_spec(args), executor=args.executor)
        job_id = submitted.get("job_id")
        if not isinstance(job_id, str):
            raise BridgeProtocolError("psij submit: no 'job_id' in the answer")
        if not args.follow:
            out.write((json.dumps(submitted, indent=2) if args.json else shown(job_id)) + "\n")
            return 0
        args.following = job_id  # for the word on Ctrl-C (see _verbs.run)
        if args.json:
            out.write(json.dumps({"event": "submitted", **submitted}) + "\n")
            out.flush()
        last: JobUpdate | None = None
        async with contextlib.aclosing(psij.watch(job_id)) as updates:  # closed at once on Ctrl-C too
            async for update in updates:
                last = update
                if args.json:
                    fields = {"job_id": update.job_id, "state": update.state, "exit_code": update.exit_code}
                    if update.kind == "output":
                        fields.update(stream=update.stream, data=update.data)
                    out.write(json.dumps({"event": update.kind, **fields}) + "\n")
                    out.flush()
                elif update.kind == "output":
                    stream = out if update.stream == "stdout" else err
                    stream.write(update.data)
                    stream.flush()
    if last is None or not last.final:  # watch() ends with the final state
        raise BridgeProtocolError(f"psij: the updates of job {job_id} ended before its final state")
    if not args.json and last.state != "DONE" and last.exit_code is None:
        err.write(f"radical-edge submit: job {shown(job_id)} {shown(last.state)}\n")
    return exit_status(last)


# ---------------------------------------------------------------- jobs, cancel


def _jobs_of(answer: Any) -> list[dict[str, Any]]:
    jobs = answer.get("jobs") if isinstance(answer, dict) else answer
    if not isinstance(jobs, list):
        raise BridgeProtocolError("psij list_jobs: no 'jobs' list in the answer")
    return [j for j in jobs if isinstance(j, dict)]


def _command(job: dict[str, Any]) -> str:
    words = [job.get("executable") or "", *(job.get("arguments") or [])]
    return " ".join(str(w) for w in words if w != "") or "-"


async def jobs(args: Any, out: TextIO = sys.stdout) -> int:
    """The psij jobs of an edge, as a table (``--json``: the plugin's answer)."""
    async with connect(args) as client:
        psij = await _psij(client, args.edge)
        found = _jobs_of(await psij.list_jobs())
    if args.json:
        out.write(json.dumps(found, indent=2, sort_keys=True) + "\n")
        return 0
    if not found:
        out.write("no jobs\n")
        return 0
    rows = [["JOB", "NATIVE ID", "EXECUTOR", "STATE", "EXIT", "COMMAND"]]
    for job in found:
        rows.append(
            [
                _text(job.get("job_id")),
                _text(job.get("native_id")),
                _text(job.get("executor")),
                _text(job.get("state")),
                _text(job.get("exit_code")),
                _command(job),
            ]
        )
    table(rows, out)
    return 0


async def cancel(args: Any, out: TextIO = sys.stdout) -> int:
    """Cancel a job; prints its state once final (or as it is after ``--wait`` seconds)."""
    async with connect(args) as client:
        psij = await _psij(client, args.edge)
        answer = await psij.cancel_job(args.job)
        status: dict[str, Any] = {}
        with anyio.move_on_after(max(args.wait, 0)):
            async with contextlib.aclosing(psij.watch(args.job, poll_interval=1.0)) as updates:
                async for update in updates:
                    status = {"job_id": update.job_id, "state": update.state, "exit_code": update.exit_code}
        if not status:
            status = await psij.get_job_status(args.job)
    if args.json:
        out.write(json.dumps({"cancel": answer, "job_id": args.job, "state": status.get("state")}, indent=2) + "\n")
    else:
        out.write(f"{shown(args.job)} {shown(status.get('state', 'UNKNOWN'))}\n")
    return 0


__all__ = ["add_parsers", "cancel", "duration_seconds", "exit_status", "job_spec", "jobs", "queues", "submit"]
