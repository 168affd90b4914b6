"""staging: move files to and from the edge through the tunnel, of any size, confined to configured roots.

Routes (relative to ``/{edge}/staging/``; every one but ``roots`` needs a session of the caller).
Paths are absolute, ``~``/``~/...`` (the edge user's home) or relative to the first root.

radical.edge's routes (base64 inside JSON, for small files; ``compat_max_bytes``, 8 MiB by default):

``POST put/{sid}``   ``{filename, content (base64), overwrite}`` -> ``{path, size, sha256}``
``POST get/{sid}``   ``{filename}`` -> ``{path, size, content (base64)}``
``POST list/{sid}``  ``{path}`` -> ``{path, entries: [{name, type, size, mtime, mode}], truncated}``

Streaming routes (any size; the body is the file's bytes):

``PUT upload/{sid}?path=&offset=0&size=&sha256=&overwrite=false&commit=true&parents=true``
    -> ``{path, size, sha256, committed}``.  Written as it arrives into a partial file beside the
    target, renamed onto it when complete (and, with ``sha256``, verified).  ``offset`` resumes.
``GET upload/{sid}?path=`` -> ``{path, offset, active, exists}``; ``DELETE upload/{sid}?path=`` -> ``{path, removed}``
``POST commit/{sid}?path=&sha256=&overwrite=false`` -> ``{path, size, sha256}``: rename a complete partial
    file (uploaded with ``commit=false``) onto its target.
``GET|HEAD file/{sid}?path=&sha256=false`` -> the bytes, with ``Content-Length``, ``Accept-Ranges``,
    ``ETag``, single ``Range`` requests (206, 416) and ``If-Range``; ``Repr-Digest: sha-256=:...:`` and
    ``X-Checksum-Sha256`` when the digest is known (``sha256=true`` or ``Want-Repr-Digest: sha-256``
    computes it first).
``GET checksum/{sid}?path=`` -> ``{path, size, sha256}``
``GET list/{sid}?path=``, ``GET stat/{sid}?path=``, ``POST mkdir/{sid}?path=&parents=&exist_ok=``,
``POST|DELETE delete/{sid}?path=&recursive=false``, ``POST move/{sid}?src=&dst=&overwrite=false``,
``GET roots``.

See ``docs/staging.md`` for the rules (confinement, atomicity, resume) and the SDK.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import functools
import json
import logging
import math
import os
import posixpath
import re
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

import anyio
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from starlette.requests import ClientDisconnect

from radical_edge_edge import Plugin, Session, caller_of, current_session, streaming_body
from radical_edge_tunnel import WriteBehind

from ._paths import PathRefused, Roots, Target, fsync_dir, refusal, remove_tree, rename_noreplace
from ._transfer import (
    CHUNK,
    ChecksumCache,
    FileStream,
    Locks,
    PartialReplaced,
    RangeNotSatisfiable,
    Upload,
    abandon_partial,
    commit_partial,
    name_keys,
    owned_by_us,
    parse_range,
    partial_name,
    partial_state,
    upload_keys,
    version_key,
)

log = logging.getLogger("radical_edge.plugins.staging")

#: where the edge's ``--staging-root`` options arrive (``os.pathsep``-separated); the default roots otherwise
ROOTS_ENV = "RADICAL_EDGE_STAGING_ROOTS"
#: the largest file the base64 routes (``put``, ``get``) move
DEFAULT_COMPAT_MAX_BYTES = 8 * 1024 * 1024
#: most entries one listing returns
DEFAULT_MAX_LIST_ENTRIES = 100_000
#: files hashed at once (each holds a worker thread for as long as its file takes to read)
DEFAULT_MAX_HASHING = 2
#: ``put``/``get`` requests at work at once (each holds its file some four times over, as JSON and bytes)
DEFAULT_MAX_WHOLE_FILES = 4
#: bytes of a partial file left to hash from disk when an upload ends past which finishing takes a hashing slot
#: (an upload hashes as it writes; only a resume that brought little after a large partial file leaves much)
HASH_SLOT_BYTES = 16 * CHUNK

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
T = TypeVar("T")


def default_roots(environ: dict[str, str] | None = None) -> list[str]:
    """``$RADICAL_EDGE_STAGING_ROOTS`` if set, else ``~``, ``$SCRATCH`` (if set) and ``/tmp``."""
    env = os.environ if environ is None else environ
    configured = env.get(ROOTS_ENV, "").strip()
    if configured:
        return [p for p in configured.split(os.pathsep) if p.strip()]
    roots = ["~"]
    scratch = env.get("SCRATCH", "").strip()
    if scratch:
        roots.append(scratch)
    roots.append("/tmp")
    return roots


class StagingSession(Session):
    """A staging session: it does not expire while one of its transfers runs (``active``)."""

    def __init__(self, sid: str, owner: str, *, ttl: float, now: float) -> None:
        super().__init__(sid, owner, ttl=ttl, now=now)
        #: transfers (uploads, downloads, checksums) in progress
        self.active = 0

    def expired(self, now: float) -> bool:
        return self.active == 0 and super().expired(now)


StagingSessionDep = Annotated[StagingSession, Depends(current_session)]


class _Hashing:
    """A checksum being computed: set ``done`` when it ends, with its ``digest`` if it got one."""

    __slots__ = ("digest", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.digest: str | None = None


class StagingPlugin(Plugin):
    """Files to and from the edge: radical.edge's base64 routes for small files, streaming routes for any size.

    Configuration (keyword arguments):

    ``roots`` (default: ``$RADICAL_EDGE_STAGING_ROOTS``, set by ``radical-edge-service --staging-root``;
    else ``~``, ``$SCRATCH`` if set, and ``/tmp``)
        the directories files may be read and written in; nothing outside them is reachable, not even
        through a symlink (symlinks are never followed).
    ``compat_max_bytes`` (8 MiB)
        the largest file ``put``/``get`` move as base64 JSON; larger ones are answered 413 with a pointer
        to ``upload``/``file``.
    ``chunk_size`` (1 MiB)
        bytes read from a file per piece of a download.
    ``batch_bytes`` (1 MiB)
        bytes of an upload gathered before they are written (one worker-thread hop per batch).
    ``max_list_entries`` (100,000)
        the most entries one listing returns (``truncated`` says when there were more).
    ``max_hashing`` (2)
        files hashed at once (checksums, ``sha256=true`` downloads); more wait their turn, so hashing never
        takes more than this many of the edge's worker threads.
    ``max_whole_files`` (4)
        ``put``/``get`` requests at work at once; more wait their turn before their body is read, so the
        base64 routes hold at most this many files in memory.
    """

    plugin_name = "staging"
    version = "0.1.0"
    description = "File staging: upload, download (ranges, checksums, resume), list, move, delete within roots."
    session_class = StagingSession
    ui: ClassVar[dict[str, Any]] = {
        "icon": "📁",
        "title": "File Staging",
        "description": "Transfer files between client and edge file systems.",
        "forms": [
            {
                "id": "list",
                "title": "List a directory",
                "fields": [{"name": "path", "type": "text", "label": "Path", "default": "~"}],
                "submit": {"label": "List", "endpoint": "list/{sid}"},
            }
        ],
        "monitors": [{"id": "listing", "title": "Listing", "type": "raw"}],
    }

    def __init__(
        self,
        name: str | None = None,
        *,
        roots: Sequence[str | os.PathLike[str]] | None = None,
        home: str | None = None,
        compat_max_bytes: int = DEFAULT_COMPAT_MAX_BYTES,
        chunk_size: int = CHUNK,
        batch_bytes: int = CHUNK,
        max_list_entries: int = DEFAULT_MAX_LIST_ENTRIES,
        max_hashing: int = DEFAULT_MAX_HASHING,
        max_whole_files: int = DEFAULT_MAX_WHOLE_FILES,
        **kwargs: Any,
    ) -> None:
        if compat_max_bytes < 0 or min(chunk_size, batch_bytes, max_list_entries, max_hashing, max_whole_files) < 1:
            raise ValueError(
                "compat_max_bytes must be >= 0; chunk_size, batch_bytes, max_list_entries, max_hashing, "
                "max_whole_files >= 1"
            )
        self.roots = Roots(default_roots() if roots is None else roots, home=home)
        if not self.roots:
            raise ValueError("none of the staging roots is an existing directory (see --staging-root)")
        self.compat_max_bytes = compat_max_bytes
        self.chunk_size = chunk_size
        self.batch_bytes = batch_bytes
        self.max_list_entries = max_list_entries
        self.locks = Locks()
        self.cache = ChecksumCache()
        #: the checksums being computed, by file version
        self._hashing: dict[tuple[int, ...], _Hashing] = {}
        self._hash_slots = anyio.CapacityLimiter(max_hashing)
        self._whole_slots = anyio.CapacityLimiter(max_whole_files)
        super().__init__(name, **kwargs)

    async def startup(self) -> None:
        log.info("staging: roots %s", ", ".join(r.path for r in self.roots))

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _busy(self, session: StagingSession) -> Iterator[None]:
        """Keep ``session`` alive while a transfer runs (and count it as used when it ends)."""
        session.active += 1
        try:
            yield
        finally:
            self._idle(session)

    def _idle(self, session: StagingSession) -> None:
        session.active -= 1
        session.last_used = max(session.last_used, self.sessions.now())

    def _http_error(self, request: Request, user_path: object, exc: PathRefused) -> HTTPException:
        if exc.escape:
            log.warning(
                "staging: refused %s %r for caller %r: %r", request.method, user_path, caller_of(request), exc.detail
            )
        return HTTPException(exc.status, exc.detail)

    async def _blocking(
        self,
        request: Request,
        user_path: object,
        func: Callable[..., T],
        *args: Any,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> T:
        """``func(*args)`` in a worker thread (one of ``limiter``'s, if given); a refused path or a failed file
        operation becomes an HTTP error."""
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=limiter)
        except PathRefused as exc:
            raise self._http_error(request, user_path, exc) from None
        except OSError as exc:
            raise self._http_error(request, user_path, refusal(exc, str(user_path))) from None

    async def _digest(self, fd: int, info: os.stat_result) -> str:
        """The SHA-256 of an open file: cached, else computed in a worker thread (once, however many ask:
        those who ask meanwhile get its result, cached or not; see :meth:`ChecksumCache.put_read`)."""
        key = version_key(info)
        while (running := self._hashing.get(key)) is not None:
            await running.done.wait()
            if running.digest is not None:
                return running.digest
        found = self.cache.get(info)
        if found is not None:
            return found
        mine = self._hashing[key] = _Hashing()
        try:
            # a slot of its own (not one of the worker threads every plugin shares); a caller that leaves
            # while it waits for one costs nothing, one that leaves once hashing began lets it finish
            mine.digest = await anyio.to_thread.run_sync(self.cache.digest, fd, info, limiter=self._hash_slots)
            return mine.digest
        finally:
            del self._hashing[key]
            mine.done.set()

    def _too_large(self, what: str, size: int | None) -> HTTPException:
        limit = self.compat_max_bytes
        shown = f" ({size} bytes)" if size is not None else ""
        if what == "put":
            hint = "stream it with PUT upload/{sid}?path=... (SDK: StagingClient.upload(local, remote))"
        else:
            hint = "stream it with GET file/{sid}?path=... (SDK: StagingClient.download(remote, local))"
        return HTTPException(
            413, f"file too large for {what}{shown}: it moves files of at most {limit} bytes as base64 JSON; {hint}"
        )

    async def _read_json(self, request: Request, limit: int) -> Any:
        """The request body as JSON, read up to ``limit`` bytes (413 past it)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large("put", None)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise self._too_large("put", None)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to parse
            raise HTTPException(400, "the body is not JSON") from None

    # ------------------------------------------------------------ blocking work (worker threads)

    def _put_whole(self, filename: str, content: bytes, overwrite: bool) -> dict[str, Any]:
        with self.roots.resolve(filename, create_parents=True) as target:
            _check_writable(target, overwrite)
            upload = Upload(target, self.locks, self.cache, offset=0, size=len(content))
            upload.open()
            try:
                upload.write([content])
                digest = upload.finish_hash()
                info = upload.commit(overwrite=overwrite)
            except BaseException:
                upload.discard()
                raise
            finally:
                upload.close()
            self.cache.put(info, digest)
            log.info("staging: put %r (%d bytes)", target.path, info.st_size)
            return {"path": target.path, "size": info.st_size, "sha256": digest}

    def _get_whole(self, filename: str) -> dict[str, Any]:
        with self.roots.resolve(filename) as target:
            fd, info = target.open_file()
            try:
                if info.st_size > self.compat_max_bytes:
                    raise self._too_large("get", info.st_size)
                data = bytearray()
                while len(data) < info.st_size:
                    piece = os.pread(fd, info.st_size - len(data), len(data))
                    if not piece:
                        break
                    data += piece
            finally:
                os.close(fd)
            log.info("staging: get %r (%d bytes)", target.path, len(data))
            return {"path": target.path, "size": len(data), "content": base64.b64encode(data).decode("ascii")}

    def _list(self, path: str) -> dict[str, Any]:
        with self.roots.resolve(path) as target:
            entries, truncated = target.listdir(self.max_list_entries)
            return {"path": target.path, "entries": entries, "truncated": truncated}

    def _stat(self, path: str) -> dict[str, Any]:
        with self.roots.resolve(path) as target:
            answer = target.describe()
            info = target.lstat()
            if info is not None and stat.S_ISREG(info.st_mode):
                digest = self.cache.get(info)
                if digest is not None:
                    answer["sha256"] = digest
            return answer

    def _mkdir(self, path: str, parents: bool, exist_ok: bool) -> dict[str, Any]:
        with self.roots.resolve(path, create_parents=parents) as target:
            if not target.is_root:
                try:
                    os.mkdir(target.name, 0o777, dir_fd=target.dir_fd)
                    return {"path": target.path, "created": True}
                except FileExistsError:
                    pass
            info = target.lstat()
            if exist_ok and info is not None and stat.S_ISDIR(info.st_mode):
                return {"path": target.path, "created": False}
            raise PathRefused(409, f"exists: {target.path}")

    @contextlib.contextmanager
    def _partial_names_held(self, *targets: Target) -> Iterator[None]:
        """Hold the names among ``targets`` that are partial files' names: 409 while an upload writes one."""
        keys = name_keys(*targets)
        if not self.locks.acquire_all(keys):
            shown = ", ".join(t.path for t in targets)
            raise PathRefused(409, f"an upload is in progress into {shown} (the partial file of a running upload)")
        try:
            yield
        finally:
            self.locks.release_all(keys)

    def _delete(self, path: str, recursive: bool) -> dict[str, Any]:
        with self.roots.resolve(path) as target, self._partial_names_held(target):
            if target.is_root or self.roots.is_root_or_holds_one(target.path):
                raise PathRefused(403, f"a staging root (or a directory holding one) is never deleted: {target.path}")
            info = target.lstat()
            if info is None:
                raise PathRefused(404, f"no such file or directory: {target.path}")
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    raise PathRefused(
                        409, f"a directory (pass recursive=true to delete it and all in it): {target.path}"
                    )
                remove_tree(target.dir_fd, target.name)  # by descriptor, never through a symlink, any depth
                kind = "dir"
            else:
                os.unlink(target.name, dir_fd=target.dir_fd)
                kind = "symlink" if stat.S_ISLNK(info.st_mode) else "file"
            fsync_dir(target.dir_fd)
            log.info("staging: deleted %s %r", kind, target.path)
            return {"path": target.path, "removed": kind}

    def _move(self, src: str, dst: str, overwrite: bool) -> dict[str, Any]:
        with self.roots.resolve(src) as source, self.roots.resolve(dst) as dest:
            for end in (source, dest):
                if end.is_root or self.roots.is_root_or_holds_one(end.path):
                    raise PathRefused(
                        403, f"a staging root (or a directory holding one) is never moved or replaced: {end.path}"
                    )
            with self._partial_names_held(source, dest):
                return self._rename(source, dest, overwrite)

    def _rename(self, source: Target, dest: Target, overwrite: bool) -> dict[str, Any]:
        if source.lstat() is None:
            raise PathRefused(404, f"no such file or directory: {source.path}")
        try:
            if overwrite:
                os.rename(source.name, dest.name, src_dir_fd=source.dir_fd, dst_dir_fd=dest.dir_fd)
            else:
                rename_noreplace(source.dir_fd, source.name, dest.dir_fd, dest.name)
        except FileExistsError:
            raise PathRefused(409, f"exists (pass overwrite=true to replace it): {dest.path}") from None
        except OSError as exc:
            raise refusal(exc, f"{source.path} -> {dest.path}") from None
        fsync_dir(dest.dir_fd)
        fsync_dir(source.dir_fd)
        log.info("staging: moved %r to %r", source.path, dest.path)
        return {"src": source.path, "dst": dest.path}

    def _open_for_reading(self, path: str) -> tuple[int, os.stat_result, str]:
        with self.roots.resolve(path) as target:
            fd, info = target.open_file()
            return fd, info, target.path

    def _start_upload(self, path: str, offset: int, size: int | None, overwrite: bool, parents: bool) -> Upload:
        target = self.roots.resolve(path, create_parents=parents)
        try:
            _check_writable(target, overwrite)
            upload = Upload(target, self.locks, self.cache, offset=offset, size=size)
            upload.open()
        except BaseException:
            target.close()
            raise
        return upload

    def _finish_upload(
        self,
        upload: Upload,
        *,
        size: int | None,
        sha256: str | None,
        overwrite: bool,
        commit: bool,
        started: float,
    ) -> dict[str, Any]:
        target = upload.target
        if size is not None and upload.written != size:
            upload.keep()
            raise PathRefused(
                400, f"incomplete: {upload.written} of {size} bytes arrived; resume at offset {upload.written}"
            )
        digest = upload.finish_hash()
        if sha256 is not None and digest != sha256:
            upload.discard()
            raise PathRefused(
                422,
                f"checksum mismatch for {target.path}: the upload has sha256 {digest}, "
                f"expected {sha256}; the partial upload was discarded",
            )
        if not commit:
            upload.keep()
            self.cache.put(os.fstat(upload.fd), digest)
            return {"path": target.path, "size": upload.written, "sha256": digest, "committed": False}
        try:
            info = upload.commit(overwrite=overwrite)
        except PathRefused as exc:
            if exc.status == 409 and not isinstance(exc, PartialReplaced):
                upload.keep()
                exc.detail += "; the upload is kept: commit it (overwrite=true) or delete it"
            raise
        self.cache.put(info, digest)
        took = max(time.monotonic() - started, 1e-6)
        log.info(
            "staging: uploaded %r (%d bytes, %.1f MiB/s)",
            target.path,
            info.st_size,
            (upload.written - upload.offset) / took / 2**20,
        )
        return {"path": target.path, "size": info.st_size, "sha256": digest, "committed": True}

    def _commit(self, path: str, sha256: str | None, overwrite: bool) -> dict[str, Any]:
        with self.roots.resolve(path) as target:
            _check_writable(target, overwrite)
            keys = upload_keys(target)
            if not self.locks.acquire_all(keys):
                raise PathRefused(409, f"an upload to {target.path} is in progress")
            try:
                try:
                    # O_NONBLOCK: a FIFO under the partial name must not hang the open (and this worker thread)
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                    fd = os.open(partial_name(target.name), flags, dir_fd=target.dir_fd)
                except FileNotFoundError:
                    raise PathRefused(404, f"no upload of {target.path} to commit") from None
                try:
                    info = os.fstat(fd)
                    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                        raise PathRefused(403, f"the partial file of {target.path} is not a plain file", escape=True)
                    if not owned_by_us(info):
                        raise PathRefused(
                            403, f"the partial file of {target.path} belongs to another user", escape=True
                        )
                    digest = self.cache.digest(fd, info)
                    if sha256 is not None and digest != sha256:
                        raise PathRefused(
                            422,
                            f"checksum mismatch for {target.path}: the upload has sha256 {digest}, expected {sha256}",
                        )
                    os.fsync(fd)
                    info = commit_partial(target, partial_name(target.name), overwrite=overwrite, fd=fd)
                finally:
                    os.close(fd)
            finally:
                self.locks.release_all(keys)
            self.cache.put(info, digest)
            log.info("staging: committed %r (%d bytes)", target.path, info.st_size)
            return {"path": target.path, "size": info.st_size, "sha256": digest}

    def _partial(self, path: str) -> dict[str, Any]:
        try:
            target = self.roots.resolve(path)
        except PathRefused as exc:
            if exc.status != 404:
                raise
            return {"path": self.roots.locate(path)[1], "offset": 0, "active": False, "exists": False}
        with target:
            return partial_state(target, self.locks)

    def _abandon(self, path: str) -> dict[str, Any]:
        with self.roots.resolve(path) as target:
            return {"path": target.path, "removed": abandon_partial(target, self.locks)}

    # ------------------------------------------------------------ the upload body

    async def _receive(self, request: Request, upload: Upload, size: int | None) -> None:
        """Write the request body into ``upload`` as it arrives, in batches of about ``batch_bytes``.

        A batch is written (and hashed) in a worker thread while the next one
        arrives: the disk and the tunnel work at the same time.
        """
        batch: list[bytes] = []
        pending = 0
        received = upload.written
        async with WriteBehind(upload.write) as writer:
            try:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    received += len(chunk)
                    if size is not None and received > size:
                        raise HTTPException(400, f"the body is longer than size={size}")
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= self.batch_bytes:
                        chunks, batch, pending = batch, [], 0
                        await writer.put(chunks)
            except BaseException:
                if batch and not writer.failed:  # what arrived is good data: keep it for the resume
                    with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                        await writer.put(batch)
                raise
            if batch:
                await writer.put(batch)

    async def _put_request(self, session: StagingSession, request: Request) -> dict[str, Any]:
        """``POST put``: the body read (bounded), checked, decoded and written."""
        limit = 4 * math.ceil(self.compat_max_bytes / 3) + 64 * 1024
        body = await self._read_json(request, limit)
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object {filename, content, overwrite}")
        filename, content, overwrite = body.get("filename"), body.get("content"), body.get("overwrite", False)
        if not isinstance(filename, str) or not filename:
            raise HTTPException(400, "Missing 'filename'")
        if not isinstance(content, str):
            raise HTTPException(400, "Missing 'content' (base64; \"\" for an empty file)")
        if not isinstance(overwrite, bool):
            raise HTTPException(400, "'overwrite' must be true or false")
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, "'content' is not valid base64") from None
        del body, content
        if len(raw) > self.compat_max_bytes:
            raise self._too_large("put", len(raw))
        with self._busy(session):
            return await self._blocking(request, filename, self._put_whole, filename, raw, overwrite)

    # ------------------------------------------------------------ routes

    def routes(self, app: FastAPI) -> None:
        plugin = self

        @app.get("/roots", tags=["staging"])
        async def roots() -> dict[str, Any]:
            """The directories this edge stages files in, and what ``~`` is."""
            return {"roots": [r.path for r in plugin.roots], "home": plugin.roots.home}

        # -------------------------------------------------------- radical.edge's base64 routes

        @app.post("/put/{sid}", tags=["staging"])
        @streaming_body  # read here, bounded, so an oversized file gets the 413 that points to upload
        async def put(session: StagingSessionDep, request: Request) -> dict[str, Any]:
            """Write a small file: ``{filename, content (base64), overwrite}`` -> ``{path, size, sha256}``."""
            async with plugin._whole_slots:  # its turn first: a request that waits holds no body yet
                return await plugin._put_request(session, request)

        @app.post("/get/{sid}", tags=["staging"])
        async def get(
            session: StagingSessionDep, request: Request, body: Annotated[dict[str, Any], Body()]
        ) -> dict[str, Any]:
            """Read a small file: ``{filename}`` -> ``{path, size, content (base64)}``."""
            filename = body.get("filename")
            if not isinstance(filename, str) or not filename:
                raise HTTPException(400, "Missing 'filename'")
            async with plugin._whole_slots:
                with plugin._busy(session):
                    return await plugin._blocking(request, filename, plugin._get_whole, filename)

        @app.post("/list/{sid}", tags=["staging"])
        async def list_post(
            session: StagingSessionDep, request: Request, body: Annotated[dict[str, Any], Body()]
        ) -> dict[str, Any]:
            """List a directory: ``{path}`` -> ``{path, entries: [{name, type, size, mtime, mode}], truncated}``."""
            path = body.get("path")
            if not isinstance(path, str) or not path:
                raise HTTPException(400, "Missing 'path'")
            return await plugin._blocking(request, path, plugin._list, path)

        # -------------------------------------------------------- the filesystem routes

        @app.get("/list/{sid}", tags=["staging"])
        async def list_get(session: StagingSessionDep, request: Request, path: str = "~") -> dict[str, Any]:
            """List a directory: ``{path, entries: [{name, type, size, mtime, mode}], truncated}`` (symlinks
            are listed as ``symlink``, never followed; ``size`` is null for directories)."""
            return await plugin._blocking(request, path, plugin._list, path)

        @app.get("/stat/{sid}", tags=["staging"])
        async def stat_route(session: StagingSessionDep, request: Request, path: str) -> dict[str, Any]:
            """``{path, name, type, size, mtime, mode}`` (and ``sha256`` when it is known already)."""
            return await plugin._blocking(request, path, plugin._stat, path)

        @app.post("/mkdir/{sid}", tags=["staging"])
        async def mkdir(
            session: StagingSessionDep, request: Request, path: str, parents: bool = False, exist_ok: bool = False
        ) -> dict[str, Any]:
            """Make a directory (``parents``: and the missing ones above it) -> ``{path, created}``."""
            return await plugin._blocking(request, path, plugin._mkdir, path, parents, exist_ok)

        @app.post("/delete/{sid}", tags=["staging"])
        async def delete(
            session: StagingSessionDep, request: Request, path: str, recursive: bool = False
        ) -> dict[str, Any]:
            """Delete a file or symlink; a directory only with ``recursive=true``; never a root."""
            return await plugin._blocking(request, path, plugin._delete, path, recursive)

        # the same as DELETE (one route per method: each gets its own OpenAPI operation)
        app.add_api_route("/delete/{sid}", delete, methods=["DELETE"], tags=["staging"], name="delete_by_delete")

        @app.post("/move/{sid}", tags=["staging"])
        async def move(
            session: StagingSessionDep, request: Request, src: str, dst: str, overwrite: bool = False
        ) -> dict[str, Any]:
            """Rename ``src`` to ``dst`` (both inside the roots, same file system) -> ``{src, dst}``."""
            return await plugin._blocking(request, f"{src} -> {dst}", plugin._move, src, dst, overwrite)

        @app.get("/checksum/{sid}", tags=["staging"])
        async def checksum(session: StagingSessionDep, request: Request, path: str) -> dict[str, Any]:
            """``{path, size, sha256}`` of a file (computed once per version of the file, then cached)."""
            with plugin._busy(session):
                fd, info, shown = await plugin._blocking(request, path, plugin._open_for_reading, path)
                try:
                    digest = await plugin._digest(fd, info)
                finally:
                    os.close(fd)
            return {"path": shown, "size": info.st_size, "sha256": digest}

        # -------------------------------------------------------- streaming transfers

        @app.put("/upload/{sid}", tags=["staging"])
        @streaming_body
        async def upload(
            session: StagingSessionDep,
            request: Request,
            *,
            path: str,
            offset: Annotated[int, Query(ge=0)] = 0,
            size: Annotated[int | None, Query(ge=0)] = None,
            sha256: str | None = None,
            overwrite: bool = False,
            commit: bool = True,
            parents: bool = True,
        ) -> dict[str, Any]:
            """Upload the request body to ``path`` -> ``{path, size, sha256, committed}``.

            ``offset`` resumes a partial upload (it must equal ``GET upload/{sid}``'s offset), ``size`` is the
            whole file's size (a shorter body leaves it partial: 400 ``incomplete``), ``sha256`` is compared
            before the rename (422 and the upload discarded on a mismatch), ``commit=false`` leaves the
            complete upload for ``POST commit/{sid}``.
            """
            if size is not None and size < offset:
                raise HTTPException(400, f"size {size} is smaller than offset {offset}")
            expected = _check_sha256(sha256)
            started = time.monotonic()
            with plugin._busy(session):
                job = await plugin._blocking(
                    request, path, plugin._start_upload, path, offset, size, overwrite, parents
                )
                try:
                    await plugin._receive(request, job, size)
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(_keep_and_close, job)
                    if isinstance(exc, ClientDisconnect):
                        log.info(
                            "staging: upload of %r cut at %d bytes (kept for a resume)", job.target.path, job.written
                        )
                        raise HTTPException(400, f"incomplete: the body was cut at {job.written} bytes") from None
                    raise
                # every byte is here: finish (verify, rename) even if the caller leaves now
                finish = functools.partial(
                    plugin._finish_upload,
                    job,
                    size=size,
                    sha256=expected,
                    overwrite=overwrite,
                    commit=commit,
                    started=started,
                )
                # much left to hash from disk (a large partial file, resumed with little): a hashing slot
                slots = plugin._hash_slots if job.written - job.hashed > HASH_SLOT_BYTES else None
                with anyio.CancelScope(shield=True):
                    try:
                        answer = await plugin._blocking(request, path, finish, limiter=slots)
                    finally:
                        await anyio.to_thread.run_sync(_close_upload, job)
            return answer

        @app.get("/upload/{sid}", tags=["staging"])
        async def upload_state(session: StagingSessionDep, request: Request, path: str) -> dict[str, Any]:
            """``{path, offset, active, exists}``: where to resume an upload to ``path`` (0: nothing to resume),
            whether one is running now, whether something is at ``path`` already."""
            return await plugin._blocking(request, path, plugin._partial, path)

        @app.delete("/upload/{sid}", tags=["staging"])
        async def upload_abandon(session: StagingSessionDep, request: Request, path: str) -> dict[str, Any]:
            """Drop the partial upload to ``path`` -> ``{path, removed}``."""
            return await plugin._blocking(request, path, plugin._abandon, path)

        @app.post("/commit/{sid}", tags=["staging"])
        async def commit_route(
            session: StagingSessionDep, request: Request, path: str, sha256: str | None = None, overwrite: bool = False
        ) -> dict[str, Any]:
            """Rename a complete upload (``commit=false``) onto ``path``, after comparing ``sha256``."""
            expected = _check_sha256(sha256)
            with plugin._busy(session):
                return await plugin._blocking(request, path, plugin._commit, path, expected, overwrite)

        @app.get("/file/{sid}", tags=["staging"])
        async def download(
            session: StagingSessionDep,
            request: Request,
            path: str,
            sha256: bool = False,
            remember_sha256: bool = False,
        ) -> FileStream:
            """The file's bytes (``Range``: one range, 206; 416 outside the file), with its SHA-256 in
            ``Repr-Digest`` and ``X-Checksum-Sha256`` when known (``sha256=true`` computes it first;
            ``remember_sha256=true`` hashes a whole file as it is sent, for ``checksum`` to answer at once)."""
            want = sha256 or "sha-256" in request.headers.get("want-repr-digest", "").lower()
            with plugin._busy(session):
                fd, info, shown = await plugin._blocking(request, path, plugin._open_for_reading, path)
                try:
                    digest = plugin.cache.get(info)
                    if digest is None and want:
                        digest = await plugin._digest(fd, info)
                    response = plugin._file_response(
                        request,
                        fd,
                        info,
                        name=posixpath.basename(shown),
                        digest=digest,
                        session=session,
                        remember=digest is None and remember_sha256,
                    )
                except BaseException:
                    os.close(fd)
                    raise
            return response

        app.add_api_route("/file/{sid}", download, methods=["HEAD"], tags=["staging"], name="download_head")

    def _file_response(
        self,
        request: Request,
        fd: int,
        info: os.stat_result,
        *,
        name: str,
        digest: str | None,
        session: StagingSession,
        remember: bool = False,
    ) -> FileStream:
        size = info.st_size
        etag = '"' + "-".join(f"{v:x}" for v in (info.st_dev, info.st_ino, size, info.st_mtime_ns)) + '"'
        headers = {
            "accept-ranges": "bytes",
            "etag": etag,
            "last-modified": email.utils.formatdate(info.st_mtime, usegmt=True),
            "content-disposition": f"attachment; filename*=UTF-8''{urllib.parse.quote(name)}",
        }
        if digest is not None:
            headers["repr-digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
            headers["x-checksum-sha256"] = digest
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() != etag:
            wanted = None  # the file changed since the caller's copy began: send all of it
        try:
            span = parse_range(wanted, size)
        except RangeNotSatisfiable:
            raise HTTPException(
                416, f"range {wanted} is outside the file ({size} bytes)", headers={"content-range": f"bytes */{size}"}
            ) from None
        status, start, length = 200, 0, size
        if span is not None:
            start, end = span
            status, length = 206, end - start
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        session.active += 1
        return FileStream(
            fd,
            start,
            length,
            status_code=status,
            headers=headers,
            head_only=request.method == "HEAD",
            chunk=self.chunk_size,
            on_close=lambda: self._idle(session),
            remember=(self.cache, info) if remember else None,
        )


def _check_sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _SHA256.fullmatch(value):
        raise HTTPException(400, "sha256 must be 64 hexadecimal digits")
    return value.lower()


def _check_writable(target: Target, overwrite: bool) -> None:
    """409 when ``target`` is a directory, or exists and ``overwrite`` is false."""
    if target.is_root:
        raise PathRefused(409, f"a directory is in the way: {target.path}")
    existing = target.lstat()
    if existing is None:
        return
    if stat.S_ISDIR(existing.st_mode):
        raise PathRefused(409, f"a directory is in the way: {target.path}")
    if not overwrite:
        raise PathRefused(409, f"exists (pass overwrite=true to replace it): {target.path}")


def _keep_and_close(upload: Upload) -> None:
    try:
        upload.keep()
    finally:
        _close_upload(upload)


def _close_upload(upload: Upload) -> None:
    upload.close()
    upload.target.close()


__all__ = ["ROOTS_ENV", "StagingPlugin", "StagingSession", "default_roots"]
