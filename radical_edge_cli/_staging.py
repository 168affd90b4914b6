"""The file verbs of ``radical-edge``: put, get, cp and ``ls EDGE:PATH``, through the edge's staging plugin.

A remote file is named ``EDGE:PATH`` (like scp): ``PATH`` is absolute, ``~``/``~/...`` (the edge
user's home) or relative to the edge's first staging root; ``EDGE:`` alone is that root.  The bytes
stream through the SDK's :class:`~radical_edge_client.AsyncStagingClient` (resumed and verified with
SHA-256 unless told otherwise); ``-`` as the local file is stdin (put) or stdout (get).

A progress bar (bytes, rate, ETA) is drawn on stderr when stderr is a terminal, never when it is a
pipe or a file, nor with ``--quiet``.  Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import posixpath
import re
import shutil
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, TextIO

from radical_edge_client import (
    AsyncBridgeClient,
    AsyncStagingClient,
    AuthError,
    ChecksumMismatch,
    EdgeNotFound,
    EdgeUnavailable,
    HTTPError,
    NotFound,
    PluginNotFound,
    RadicalEdgeError,
)

from . import _hpc
from ._stdio import DaemonReader, DaemonWriter
from ._term import isatty, shown

REMOTE_FORM = "EDGE:PATH"


@dataclass(frozen=True)
class Remote:
    """``EDGE:PATH`` taken apart; ``path`` is what the staging plugin is given (``.``: the first root)."""

    edge: str
    path: str

    def __str__(self) -> str:
        return f"{self.edge}:{self.path}"


def parse_remote(text: str) -> Remote | None:
    """``EDGE:PATH`` as a :class:`Remote`; None for a local path (no colon, or a '/' before the first one)."""
    edge, sep, path = text.partition(":")
    if not sep or not edge or "/" in edge:
        return None
    return Remote(edge, path or ".")


def add_parsers(sub: Any, connection_options: Any) -> None:
    """``put``, ``get`` and ``cp`` on the ``radical-edge`` parser (``ls EDGE:PATH`` is ``ls``'s)."""

    def transfer_options(parser: Any, *, local_target: bool = False) -> None:
        target = "the local file" if local_target else "the file on the edge"
        parser.add_argument("--overwrite", action="store_true", help=f"replace {target} if it exists")
        parser.add_argument(
            "--no-resume",
            dest="resume",
            action="store_false",
            help="start over instead of continuing what an earlier, interrupted transfer left",
        )
        parser.add_argument(
            "--no-verify",
            dest="verify",
            action="store_false",
            help="do not compare the SHA-256 of what moved with the source's",
        )
        parser.add_argument(
            "--quiet", "-q", action="store_true", help="no progress bar and no summary line (errors still show)"
        )
        connection_options(parser)

    epilog = (
        "EDGE:PATH names a file on an edge: PATH is absolute, ~ or ~/... (the edge user's home) or relative to "
        "the edge's first staging root (EDGE: alone is that root); it must lie inside the edge's staging roots. "
        "A progress bar (bytes, rate, ETA) goes to stderr when stderr is a terminal."
    )
    put = sub.add_parser(
        "put",
        help="upload a file to an edge: FILE EDGE:PATH",
        description="Upload FILE (- : standard input) to PATH on EDGE through its staging plugin. The file "
        "appears there only when complete and verified (SHA-256); an interrupted upload is resumed by running "
        "the same command again. A PATH that is a directory, or ends with '/', receives the file under its name.",
        epilog=epilog,
    )
    put.add_argument("source", metavar="FILE", help="the local file, or - for standard input")
    put.add_argument("target", metavar=REMOTE_FORM)
    put.add_argument(
        "--no-parents",
        dest="parents",
        action="store_false",
        help="refuse instead of making the missing directories above PATH",
    )
    transfer_options(put)

    get = sub.add_parser(
        "get",
        help="download a file from an edge: EDGE:PATH [FILE]",
        description="Download PATH on EDGE to FILE (default: the current directory; a directory keeps the "
        "file's name; - : standard output) through its staging plugin. FILE appears only when complete and "
        "verified (SHA-256); until then the bytes collect in .NAME.radical-partial beside it, which the same "
        "command continues after an interruption.",
        epilog=epilog,
    )
    get.add_argument("source", metavar=REMOTE_FORM)
    get.add_argument("target", metavar="FILE", nargs="?", default=".", help="where to (default: .); - : stdout")
    transfer_options(get, local_target=True)

    cp = sub.add_parser(
        "cp",
        help="copy a file from one edge to another: EDGE:PATH EDGE2:PATH",
        description="Copy PATH on EDGE to PATH on EDGE2 (may be the same edge) through the bridge: the bytes "
        "stream from one edge to the other through this command's memory, never its disk. Verified with "
        "SHA-256 on both edges; an interrupted copy is resumed by running the same command again.",
        epilog=epilog,
    )
    cp.add_argument("source", metavar=REMOTE_FORM)
    cp.add_argument("target", metavar="EDGE2:PATH")
    cp.add_argument(
        "--no-parents",
        dest="parents",
        action="store_false",
        help="refuse instead of making the missing directories above the target",
    )
    transfer_options(cp)


# ---------------------------------------------------------------- the progress bar


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def _clock(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds) or seconds < 0 or seconds > 359_999:
        return "--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressBar:
    """``progress(bytes_done, bytes_total)`` drawn on one line of ``stream`` (a terminal): redrawn at most
    every ``interval`` seconds, with the rate over the last few seconds and the time left."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        interval: float = 0.1,
        window: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        columns: int | None = None,
    ) -> None:
        self.label = shown(label)  # a file's name: it may come from an edge
        self.stream = stream
        self.interval = interval
        self.window = window
        self.clock = clock
        self.columns = columns
        self.start: float | None = None
        self.first = 0  # bytes already there when it started (a resume)
        self.done = 0
        self.total: int | None = None
        self.samples: collections.deque[tuple[float, int]] = collections.deque()
        self.drawn_at = -1e9
        self.width = 0  # of the last line drawn
        self.cells: int | None = None  # of the bar

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.start is None:
            self.start, self.first = now, done
        self.done, self.total = done, total
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        if now - self.drawn_at >= self.interval:
            self.draw(now)

    def rate(self, now: float, *, overall: bool = False) -> float | None:
        if overall or len(self.samples) < 2:
            if self.start is None or now - self.start <= 0:
                return None
            return (self.done - self.first) / (now - self.start)
        t0, d0 = self.samples[0]
        return (self.done - d0) / (now - t0) if now > t0 else None

    def line(self, now: float, *, final: bool = False) -> str:
        rate = self.rate(now, overall=final)
        speed = f"{human_bytes(rate)}/s" if rate is not None else "--- B/s"
        if final:
            elapsed = now - (self.start if self.start is not None else now)
            tail = f"{speed}  in {f'{elapsed:.1f} s' if elapsed < 60 else _clock(elapsed)}"
        elif self.total is not None:
            tail = f"{speed}  ETA {_clock((self.total - self.done) / rate) if rate else '--:--'}"
        else:
            tail = speed
        columns = self.columns or shutil.get_terminal_size((80, 24)).columns
        columns = columns if columns >= 40 else 80
        label = self.label if len(self.label) <= columns // 3 else "…" + self.label[-(columns // 3 - 1) :]
        if self.total is None:
            return f"{label}  {human_bytes(self.done)}  {tail}"
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        middle = f"{human_bytes(self.done)} / {human_bytes(self.total)} {100 * fraction:3.0f}%"
        if self.cells is None:  # once, for the widest line this transfer can draw: the bar keeps its width
            widest = len(label) + len(f"{human_bytes(self.total)} / {human_bytes(self.total)} 100%") + 26 + 6
            self.cells = max(0, min(30, columns - 1 - widest - 2))
        if self.cells < 5:
            return f"{label}  {middle}  {tail}"
        full = round(self.cells * fraction)
        return f"{label}  {middle}  [{'#' * full}{'-' * (self.cells - full)}]  {tail}"

    def draw(self, now: float, *, final: bool = False) -> None:
        text = self.line(now, final=final)
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        self.stream.flush()
        self.width = len(text)
        self.drawn_at = now

    def close(self) -> None:
        """The last line (the average rate and the time taken), ended."""
        if self.start is not None:
            self.draw(self.clock(), final=True)

    def abort(self) -> None:
        """End the line drawn so far (an error message follows on a line of its own)."""
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _progress(args: Any, label: str, err: TextIO) -> ProgressBar | None:
    """A progress bar on ``err`` if it is a terminal and ``--quiet`` was not given."""
    if getattr(args, "quiet", False):
        return None
    return ProgressBar(label, err) if isatty(err) else None


# ---------------------------------------------------------------- errors


class Failure(Exception):
    """A failure already worded for the user: printed as ``radical-edge VERB: MESSAGE``."""


#: the request the SDK puts before an error's detail (``GET /e1/staging/stat/...: ``): the user named the file
_WHERE = re.compile(r"^(?:GET|HEAD|PUT|POST|DELETE|PATCH) /\S*: ")


def _detail(exc: RadicalEdgeError) -> str:
    if not isinstance(exc.detail, str):
        return json.dumps(exc.detail, default=str)
    return _WHERE.sub("", exc.detail, count=1)


async def _roots_hint(plugin: AsyncStagingClient | None) -> str:
    if plugin is None:
        return ""
    try:
        roots = (await plugin.roots()).get("roots") or []
    except RadicalEdgeError:
        return ""
    listed = ", ".join(str(r.get("path") if isinstance(r, dict) else r) for r in roots)
    return f" (the staging roots of {plugin.edge.name}: {listed})" if listed else ""


async def explain(exc: BaseException, where: str, plugin: AsyncStagingClient | None = None) -> str:
    """One line for the user about ``exc``, met while working on ``where`` (an ``EDGE:PATH`` or a file)."""
    if isinstance(exc, Failure):
        return str(exc)
    if isinstance(exc, FileExistsError):
        name = exc.filename or where
        return f"{name} exists (use --overwrite to replace it)"
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else where
        return f"{name}: {exc.strerror or exc}"
    if isinstance(exc, ChecksumMismatch):
        return f"checksum mismatch, nothing was put in place: {_detail(exc)}"
    if isinstance(exc, EdgeNotFound):
        edge = where.split(":", 1)[0]
        return f"no edge named {edge!r} (radical-edge ls lists the edges)"
    if isinstance(exc, PluginNotFound):
        return f"{_detail(exc)}; an edge stages files with its staging plugin (radical-edge-service --plugins staging)"
    if isinstance(exc, EdgeUnavailable):
        return f"{where}: the edge is not connected to the bridge now ({_detail(exc)})"
    if isinstance(exc, NotFound) and exc.status == 404 and type(exc) is NotFound:
        detail = _detail(exc)
        return f"{where}: {detail if 'no such' in detail.lower() else f'not found ({detail})'}"
    if isinstance(exc, AuthError) and exc.status == 403:
        detail = _detail(exc)
        hint = await _roots_hint(plugin) if detail.startswith("outside the staging roots") else ""
        return f"{where}: refused: {detail}{hint}"
    if isinstance(exc, HTTPError) and exc.status == 409:
        detail = _detail(exc)
        if detail.startswith("exists"):
            return f"{where} exists (use --overwrite to replace it)"
        return f"{where}: {detail}"
    if isinstance(exc, HTTPError) and exc.status in (400, 413, 416, 422, 507):
        return f"{where}: {_detail(exc)}"
    if isinstance(exc, RadicalEdgeError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError):  # e.g. a remote path that names no file to download into a directory
        return f"{where}: {exc}"
    return f"{type(exc).__name__}: {exc}"  # pragma: no cover - run() lets only the above through


# ---------------------------------------------------------------- helpers


async def _staging(client: AsyncBridgeClient, edge: str) -> AsyncStagingClient:
    return await _hpc.plugin_of(client, edge, "staging", AsyncStagingClient)


def _remote(args: Any, text: str, role: str) -> Remote:
    remote = parse_remote(text)
    if remote is None:
        other = {"put": "get", "get": "put"}.get(args.command)
        hint = f" (radical-edge {other} moves the other way)" if other else ""
        raise Failure(f"{role} {text!r} is not {REMOTE_FORM}{hint}")
    return remote


def _file_name(path: str) -> str | None:
    """The last component of a remote ``path`` given by the user, as a file name (None: it names none)."""
    name = posixpath.basename(path.rstrip("/"))
    return None if name in ("", ".", "..", "~") else name


async def _target_path(
    plugin: AsyncStagingClient, remote: Remote, name: str | None, nameless: str = "standard input has none"
) -> str:
    """Where a file called ``name`` goes when sent to ``remote``: into it when it is a directory (or ends
    with '/'), else ``remote``'s path.  Asking also finds a path outside the roots (403) before any byte moves."""
    path = remote.path
    if path.endswith("/") or path in (".", "~"):
        if name is None:
            raise Failure(f"{remote}: give the file's name on the edge ({nameless})")
        return posixpath.join(path, name)
    try:
        info = await plugin.stat(path)
    except NotFound as exc:
        if type(exc) is not NotFound:  # the edge or the plugin went away meanwhile
            raise
        return path
    except HTTPError as exc:
        if exc.status == 400:  # e.g. a file where a directory would be: let the upload say it
            return path
        raise
    if info.get("type") == "dir":
        if name is None:
            raise Failure(f"{remote} is a directory: give the file's name on the edge ({nameless})")
        return posixpath.join(path, name)
    return path


def _summary(args: Any, out: TextIO, verb: str, where: str, answer: dict[str, Any], *, extra: dict[str, Any]) -> None:
    if args.json:
        out.write(json.dumps({**extra, **answer}, indent=2) + "\n")
    elif not args.quiet:
        sha = answer.get("sha256")
        check = f"sha256 {sha}" if sha else "not verified"
        out.write(shown(f"{verb} {where} ({answer.get('size')} bytes, {check})") + "\n")
    out.flush()


# ---------------------------------------------------------------- the verbs


@dataclass
class _Run:
    """What a verb has got to, for its error message: where it works, its staging client, its progress bar."""

    where: str
    plugin: AsyncStagingClient | None = None
    bar: ProgressBar | None = None
    message: str | None = None

    def options(self, args: Any, *, parents: bool = True) -> dict[str, Any]:
        """What every transfer verb passes on: ``--overwrite``, ``--resume``, ``--verify`` (``--parents`` where
        directories are made) and the progress bar."""
        options = {"overwrite": args.overwrite, "resume": args.resume, "verify": args.verify, "progress": self.bar}
        if parents:
            options["parents"] = args.parents
        return options

    def finished(self) -> None:
        """The transfer is done: the progress bar (if any) shows its last state."""
        if self.bar is not None:
            self.bar.close()

    @contextlib.asynccontextmanager
    async def connected(self, args: Any) -> AsyncIterator[AsyncBridgeClient]:
        """The SDK client; a failure while it is open is worded while it is (so the edge's roots can be asked)."""
        async with _hpc.connect(args) as client:
            try:
                yield client
            except (RadicalEdgeError, OSError, ValueError, Failure) as exc:
                if self.bar is not None:
                    self.bar.abort()
                self.message = await explain(exc, self.where, self.plugin)
                raise


async def _guarded(verb: str, run: _Run, work: Callable[[], Awaitable[None]]) -> int:
    """Run ``work``; a failure becomes one line on stderr (status 1), after the progress bar's line is ended."""
    try:
        await work()
    except (RadicalEdgeError, OSError, ValueError, Failure) as exc:
        if run.bar is not None:
            run.bar.abort()
        message = run.message or await explain(exc, run.where, None)
        sys.stderr.write(f"radical-edge {verb}: {shown(message)}\n")
        sys.stderr.flush()
        return 1
    return 0


async def put(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Upload a local file (``-``: stdin) to ``EDGE:PATH``."""
    run = _Run(args.target)

    async def work() -> None:
        remote = _remote(args, args.target, "the target")
        stdin = args.source == "-"
        local = os.path.expanduser(args.source)
        if not stdin:
            if os.path.isdir(local):
                raise Failure(f"{args.source} is a directory (put sends one file)")
            with open(local, "rb"):  # a missing or unreadable file: said before connecting
                pass
        source: str | DaemonReader | IO[bytes] = _stdin_source() if stdin else local
        resumable = not isinstance(source, DaemonReader)
        name = None if stdin else os.path.basename(local.rstrip("/"))
        async with run.connected(args) as client:
            staging = run.plugin = await _staging(client, remote.edge)
            path = await _target_path(staging, remote, name)
            run.where = f"{remote.edge}:{path}"
            run.bar = _progress(args, name or "stdin", err)
            args.on_interrupt = (
                f"interrupted: the same command resumes the upload to {run.where}"
                if resumable
                else f"interrupted: the upload to {run.where} stopped; from a pipe it cannot resume (run it again)"
            )
            answer = await staging.upload(source, path, **run.options(args))
            run.finished()
        args.on_interrupt = None
        _summary(args, out, "uploaded to", f"{remote.edge}:{answer.get('path')}", answer, extra={"edge": remote.edge})

    return await _guarded("put", run, work)


def _stdin_source() -> DaemonReader | IO[bytes]:
    """What ``put -`` reads: a regular file (``< FILE``) as itself (seekable: its size is known, an upload of
    it resumes, and it never blocks for good); a pipe or a terminal through a daemon thread."""
    if sys.stdin is None:
        raise Failure("there is no standard input to read (it is closed)")
    fd = sys.stdin.fileno()
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return open(fd, "rb", buffering=0, closefd=False)
    return DaemonReader(fd)


async def get(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Download ``EDGE:PATH`` to a local file (``-``: stdout)."""
    run = _Run(args.source)

    async def work() -> None:
        remote = _remote(args, args.source, "the source")
        to_stdout = args.target == "-"
        if to_stdout:
            if sys.stdout is None:
                raise Failure("there is no standard output to write to (it is closed)")
            sys.stdout.flush()  # nothing buffered is written after the file's bytes
        target: str | DaemonWriter = DaemonWriter(sys.stdout.fileno()) if to_stdout else os.path.expanduser(args.target)
        async with run.connected(args) as client:
            staging = run.plugin = await _staging(client, remote.edge)
            run.bar = _progress(args, posixpath.basename(remote.path.rstrip("/")) or remote.path, err)
            if not to_stdout:
                args.on_interrupt = "interrupted: the same command continues the download"
            try:
                answer = await staging.download(remote.path, target, **run.options(args, parents=False))
            except FileExistsError:
                assert isinstance(target, str)
                name = posixpath.basename(remote.path.rstrip("/"))
                final = os.path.join(target, name) if os.path.isdir(target) else target
                raise Failure(f"{final} exists (use --overwrite to replace it)") from None
            run.finished()
        args.on_interrupt = None
        if isinstance(target, DaemonWriter):
            if args.json:  # stdout is the file: the JSON goes to stderr (and no summary line, like cat)
                _summary(args, err, "downloaded to", "stdout", {**answer, "path": "-"}, extra={"remote": str(remote)})
        else:
            _summary(args, out, "downloaded to", str(answer.get("path")), answer, extra={"remote": str(remote)})

    return await _guarded("get", run, work)


async def cp(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Copy ``EDGE:PATH`` to ``EDGE2:PATH`` through the bridge."""
    run = _Run(args.source)

    async def work() -> None:
        src = _remote(args, args.source, "the source")
        dst = _remote(args, args.target, "the target")
        async with run.connected(args) as client:
            source = run.plugin = await _staging(client, src.edge)
            info = await source.stat(src.path)  # a missing source, or one outside the roots: said as the source's
            if info.get("type") != "file":
                raise Failure(f"{src} is a {info.get('type')}, not a file (cp copies one file)")
            run.where = str(dst)
            target = run.plugin = await _staging(client, dst.edge)
            # into a directory, the copy is named after the source the user named, never after a name the
            # source edge answers with (a hostile one could say '.bashrc')
            path = await _target_path(target, dst, _file_name(src.path), f"{src} names none")
            run.where = f"{dst.edge}:{path}"
            run.bar = _progress(args, posixpath.basename(src.path), err)
            args.on_interrupt = f"interrupted: the same command resumes the copy to {run.where}"
            answer = await source.copy(src.path, target, path, **run.options(args))
            run.finished()
        args.on_interrupt = None
        copied = f"{dst.edge}:{answer.get('path')}"
        _summary(args, out, f"copied {src.edge}:{info.get('path')} to", copied, answer, extra={"edge": dst.edge})

    return await _guarded("cp", run, work)


def _when(mtime: Any) -> str:
    if not isinstance(mtime, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


#: a listing's ``type`` as the file type bits ``stat.filemode`` shows (its ``mode`` holds the permissions only)
_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def _row(entry: dict[str, Any], name: str) -> list[str]:
    kind = str(entry.get("type") or "-")
    mode = entry.get("mode")
    size = entry.get("size")
    label = name + ("/" if kind == "dir" else "")
    return [
        kind,
        stat.filemode(_TYPE_BITS.get(kind, 0) | (mode & 0o7777)) if isinstance(mode, int) else "-",
        "-" if size is None else str(size),
        _when(entry.get("mtime")),
        label,
    ]


async def listing(args: Any, out: TextIO = sys.stdout) -> int:
    """``ls EDGE:PATH``: a directory on the edge (or one file), with type, mode, size and time."""
    remote = parse_remote(args.target)
    assert remote is not None

    run = _Run(str(remote))

    async def work() -> None:
        async with run.connected(args) as client:
            staging = run.plugin = await _staging(client, remote.edge)
            try:
                answer = await staging.listdir(remote.path)
            except HTTPError as exc:
                if exc.status != 400:
                    raise
                info = await staging.stat(remote.path)  # not a directory: the file itself, as ls shows it
                if info.get("type") == "dir":
                    raise
                answer = {"path": info.get("path"), "entries": [info], "truncated": False}
        entries = [e for e in answer.get("entries") or [] if isinstance(e, dict)]
        if args.json:
            out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
            return
        rows = [["TYPE", "MODE", "SIZE", "MODIFIED", "NAME"]]
        rows += [_row(e, str(e.get("name"))) for e in sorted(entries, key=lambda e: str(e.get("name")))]
        if len(rows) == 1:
            out.write(shown(f"{remote.edge}:{answer.get('path')}: empty") + "\n")
        else:
            _hpc.table(rows, out)
        if answer.get("truncated"):
            sys.stderr.write(f"radical-edge ls: only the first {len(entries)} entries (the edge's limit)\n")

    return await _guarded("ls", run, work)


__all__ = [
    "ProgressBar",
    "Remote",
    "add_parsers",
    "cp",
    "explain",
    "get",
    "human_bytes",
    "listing",
    "parse_remote",
    "put",
]
