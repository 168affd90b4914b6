"""The ``staging`` plugin's client: radical.edge's ``put``/``get``/``list``, and streamed transfers of any size.

Streamed transfers go through the same request path as every other call
(:meth:`AsyncPluginClient.request` / :meth:`~AsyncPluginClient.stream`): the
body is read from its source only as fast as the tunnel's flow control lets
it out, and an answer is written where it goes as it arrives, so memory stays
bounded by the flow-control windows plus one batch (:data:`CHUNK`) whatever
the file's size.  Blocking file reads, writes and hashing run in worker
threads, a batch at a time.

Timeouts count silence, not the whole transfer: a call fails with
:class:`~radical_edge_client.RequestTimeout` when no byte moved for the
client's ``timeout`` (120 s by default), however long the file takes.

Resume: an upload cut short leaves its bytes on the edge; the next
``upload(..., resume=True)`` of a seekable source (a path, a seekable file)
asks how many arrived and sends the rest.  A download keeps
``.{name}.radical-partial`` beside the local target and continues it with a
``Range`` request.  Verify: both hash what moves (SHA-256, the resumed
prefix re-read from disk) and compare it with the edge's before the file is
put in place; a mismatch raises :class:`~radical_edge_client.ChecksumMismatch`
and drops the partial file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import inspect
import io
import math
import os
import posixpath
import re
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, ClassVar, TypeAlias

import anyio
import anyio.to_thread

from ._blocking import Blocking
from ._client import AsyncPluginClient, register_plugin_client
from ._errors import BridgeProtocolError, ChecksumMismatch, HTTPError, RadicalEdgeError, RequestTimeout, expect_dict
from ._http import (
    ChunkWriter,
    StreamResponse,
    SupportsAsyncRead,
    SupportsAsyncWrite,
    SupportsRead,
    SupportsWrite,
    _read_chunk,
    body_chunks,
    sink_write,
)

#: bytes read from a local file per worker-thread hop, and gathered before one local write
CHUNK = 1024 * 1024
#: the suffix of a partial file (on the edge beside the target, and locally beside a download's target)
PARTIAL_SUFFIX = ".radical-partial"

#: ``progress(bytes_done, bytes_total)``: ``bytes_total`` is None when the size is not known; it may be async
ProgressCallback: TypeAlias = Callable[[int, int | None], Any]
#: what :meth:`AsyncStagingClient.upload` reads: a local path, bytes, a binary file object (sync or async
#: ``read``), an async iterator or an iterator of bytes
UploadSource: TypeAlias = (
    str
    | os.PathLike[str]
    | bytes
    | bytearray
    | memoryview
    | IO[bytes]
    | SupportsRead
    | SupportsAsyncRead
    | AsyncIterable[bytes]
    | Iterable[bytes]
)
#: where :meth:`AsyncStagingClient.download` writes: a local path, or a binary file object (sync or async ``write``)
DownloadTarget: TypeAlias = str | os.PathLike[str] | IO[bytes] | SupportsWrite | SupportsAsyncWrite

_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


#: the longest file name (in bytes) most file systems take
_NAME_MAX = 255


def local_partial(path: Path) -> Path:
    """Where a download to ``path`` collects its bytes until it is complete and verified:
    ``.{name}.radical-partial`` beside it, or ``.{first 40 hex digits of the name's SHA-256}.radical-partial``
    for a name too long for that (as the edge names its partial files)."""
    name = f".{path.name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) > _NAME_MAX:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:40]}{PARTIAL_SUFFIX}"
    return path.with_name(name)


def _local_name(remote: str) -> str:
    """The file name a download of ``remote`` gets in a local directory: the last component of the path
    the caller gave (never a name the edge sends).  ``ValueError`` when that names no file."""
    name = posixpath.basename(remote.rstrip("/"))
    if name in ("", ".", "..", "~") or "\0" in name:
        raise ValueError(f"{remote!r} names no file to download into a directory: give the local file's name")
    return name


#: how a download's local partial file is opened: never through a symlink, not kept open by a child
_OPEN_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
#: opening a FIFO without this would block until someone opens its other end
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _continuable(info: os.stat_result) -> bool:
    """Whether a partial file may be continued: a regular file of this user with no other hard link."""
    getuid = getattr(os, "getuid", None)
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and (getuid is None or info.st_uid == getuid())


def _open_partial(part: Path, resume: bool) -> tuple[IO[bytes], int]:
    """The local partial file of a download, open for reading and writing, and the bytes it holds already.

    Continued (``resume``) only when it is a regular file of this user with no other link, opened without
    following a symlink and without blocking (a FIFO): anything else at that name (a symlink or a hard link
    someone planted to have the download write into another file, a FIFO to hang it) is removed, the name
    only, and a new file is made with ``O_EXCL``, which never opens what it did not create.
    """
    if resume:
        try:
            fd = os.open(part, _OPEN_FLAGS | _NONBLOCK)
        except OSError:  # nothing there, a symlink (ELOOP), a directory, not ours to open...
            fd = -1
        if fd >= 0:
            info = os.fstat(fd)
            if _continuable(info):
                if _NONBLOCK:
                    os.set_blocking(fd, True)
                return os.fdopen(fd, "r+b"), info.st_size
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)  # a symlink or a hard link goes, not what it leads to; a directory stays (an error below)
    fd = os.open(part, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
    return os.fdopen(fd, "r+b"), 0


async def _report(progress: ProgressCallback | None, done: int, total: int | None) -> None:
    if progress is not None:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result


class _Silence:
    """A cancel scope that fires after ``timeout`` seconds without :meth:`poke` (None: never)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = None if timeout is None or math.isinf(timeout) else timeout
        self.scope = anyio.CancelScope()
        self.poke()

    def poke(self) -> None:
        if self.timeout is not None:
            self.scope.deadline = anyio.current_time() + self.timeout

    def check(self, where: str) -> None:
        """Raise :class:`RequestTimeout` if the scope fired."""
        if self.scope.cancelled_caught:
            raise RequestTimeout(f"{where}: nothing moved for {self.timeout:g} s (the transfer was cancelled)")


# ---------------------------------------------------------------- upload sources


class _Source:
    """What an upload reads: its chunks (blocking reads in worker threads, hashed there), size, seekability."""

    def __init__(self, obj: Any, *, owned: bool = False) -> None:
        self.obj = obj
        self.owned = owned  # opened here: closed here
        self.size: int | None = None
        self.seekable = False
        self.base = 0  # where the content starts in a seekable file object
        self.name: str | None = None

    @classmethod
    async def open(cls, source: UploadSource) -> _Source:
        if isinstance(source, str | os.PathLike):
            path = os.fspath(source)
            fh = await anyio.to_thread.run_sync(open, os.path.expanduser(path), "rb", 0)
            src = cls(fh, owned=True)
            src.name = os.path.basename(path)
        elif isinstance(source, bytes | bytearray | memoryview):
            src = cls(io.BytesIO(source), owned=True)
        else:
            src = cls(source)
        await anyio.to_thread.run_sync(src._probe)
        return src

    def _probe(self) -> None:
        obj = self.obj
        read = getattr(obj, "read", None)
        if read is None or inspect.iscoroutinefunction(read):
            return
        seekable = getattr(obj, "seekable", None)
        try:
            if callable(seekable) and seekable():
                self.base = obj.tell()
                self.size = obj.seek(0, os.SEEK_END) - self.base
                obj.seek(self.base)
                self.seekable = True
        except (OSError, ValueError):
            self.seekable = False

    async def skip(self, offset: int, digest: Any) -> None:
        """Move to ``offset`` (a resume), feeding the bytes before it to ``digest`` when given."""
        if digest is None:
            await anyio.to_thread.run_sync(self.obj.seek, self.base + offset)
            return
        await anyio.to_thread.run_sync(self.obj.seek, self.base)
        left = offset
        while left:
            data = await anyio.to_thread.run_sync(_read_chunk, self.obj.read, min(CHUNK, left), digest)
            if data is None:
                raise RadicalEdgeError(f"the local file is shorter than the {offset} bytes to resume after")
            left -= len(data)

    def chunks(self, digest: Any) -> contextlib.AbstractAsyncContextManager[AsyncIterable[bytes]]:
        """The content from where it stands, chunk by chunk (read one ahead), hashed into ``digest`` when given."""
        return body_chunks(self.obj, chunk_size=CHUNK, digest=digest, owned=self.owned)

    async def aclose(self) -> None:
        if self.owned:
            await anyio.to_thread.run_sync(self.obj.close)


# ---------------------------------------------------------------- download sinks


class _Sink:
    """Where a download goes, and the digest what arrives is fed to."""

    def __init__(self, obj: Any, digest: Any) -> None:
        sink_write(obj)  # a target that cannot be written to is refused before anything is asked of the edge
        self.obj = obj
        self.digest = digest

    async def drain(
        self, answer: StreamResponse, silence: _Silence, done: int, total: int | None, progress: ProgressCallback | None
    ) -> int:
        """Write the rest of ``answer``'s body here (each chunk pokes ``silence`` and is reported); the bytes done.

        A blocking target is written in batches behind the arriving chunks (:class:`ChunkWriter`); all of it is
        written when this returns.
        """
        async with ChunkWriter(self.obj, self.digest, batch_size=CHUNK) as writer:
            while chunk := await answer.receive():
                silence.poke()
                await writer.add(chunk)
                done += len(chunk)
                await _report(progress, done, total)
        return done


def _total_of(answer: StreamResponse, offset: int) -> int | None:
    """The whole file's size from a 200 (``Content-Length``) or 206 (``Content-Range``) answer."""
    if answer.status == 206:
        match = _CONTENT_RANGE.fullmatch(answer.header("content-range") or "")
        if match is None:
            raise BridgeProtocolError(f"{answer.where}: a 206 answer without a usable Content-Range")
        if int(match.group(1)) != offset:
            raise BridgeProtocolError(f"{answer.where}: asked for bytes from {offset}, got {match.group(0)}")
        return int(match.group(3))
    return _content_length(answer)


def _content_length(answer: StreamResponse) -> int | None:
    length = answer.header("content-length")
    return int(length) if length is not None and length.isdigit() else None


def _digest_of(answer: StreamResponse) -> str | None:
    """The file's SHA-256 (hex) the edge sent in ``Repr-Digest``, if it did."""
    match = _DIGEST.search(answer.header("repr-digest") or "")
    if match is None:
        return answer.header("x-checksum-sha256")
    try:
        return base64.b64decode(match.group(1), validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _hash_prefix(fh: Any, size: int, digest: Any) -> None:
    fh.seek(0)
    left = size
    while left:
        data = fh.read(min(CHUNK, left))
        if not data:
            break
        digest.update(data)
        left -= len(data)
    fh.seek(size)


def _finish_local(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _close_keeping_data(fh: Any, part: Path) -> None:
    """Close a download's partial file; remove it if nothing arrived (nothing to resume)."""
    fh.close()
    with contextlib.suppress(OSError):
        if part.stat().st_size == 0:
            part.unlink()


def _put_in_place(part: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(part, final)
        return
    try:
        os.link(part, final)  # never replaces: atomic no-clobber where hard links work
    except FileExistsError:
        raise
    except OSError:
        if final.exists():
            raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)") from None
        os.rename(part, final)
        return
    os.unlink(part)


@register_plugin_client
class AsyncStagingClient(AsyncPluginClient):
    """The ``staging`` plugin: files to and from an edge, of any size.

    radical.edge's ``put``/``get``/``list`` move small files whole (base64
    in JSON); :meth:`upload`, :meth:`download` and :meth:`copy` stream any
    size, resume and verify.  Remote paths are absolute, ``~``/``~/...`` (the
    edge user's home) or relative to the edge's first staging root, and must
    lie inside the edge's staging roots (:meth:`roots`).

    A ``progress(bytes_done, bytes_total)`` callback (``bytes_total`` None
    when unknown) is called as bytes move; in the blocking client it runs
    in the client's event loop thread, so keep it quick (drawing a progress
    bar is fine).
    """

    plugin_type: ClassVar[str] = "staging"

    # ------------------------------------------------------------ radical.edge's calls

    async def put(self, filename: str, content: bytes | str, *, overwrite: bool = False) -> dict[str, Any]:
        """Write ``content`` to ``filename`` on the edge; returns ``{path, size}`` (and ``sha256``).

        For small files (the edge's limit is 8 MiB by default; larger ones are
        refused with 413): use :meth:`upload` for anything bigger.
        """
        raw = content.encode() if isinstance(content, str) else bytes(content)
        body = {"filename": filename, "content": base64.b64encode(raw).decode("ascii"), "overwrite": overwrite}
        return expect_dict(await self.post_json(self.session_path("put"), json=body), "staging put")

    async def get(self, filename: str) -> bytes:
        """The content of ``filename`` on the edge, as bytes (small files: use :meth:`download` for big ones)."""
        got = await self.post_json(self.session_path("get"), json={"filename": filename})
        answer = expect_dict(got, "staging get")
        try:
            return base64.b64decode(answer["content"], validate=True)
        except (KeyError, ValueError, TypeError):
            raise BridgeProtocolError("staging get: no valid base64 'content' in the answer") from None

    async def list(self, path: str = "~") -> dict[str, Any]:
        """``{path, entries: [{name, type, size, mtime, mode}]}`` of a directory on the edge."""
        return expect_dict(await self.post_json(self.session_path("list"), json={"path": path}), "staging list")

    async def put_file(
        self, local: str | os.PathLike[str], filename: str, *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Copy a small local file to ``filename`` on the edge (:meth:`upload` streams files of any size)."""
        content = await anyio.to_thread.run_sync(Path(local).read_bytes)
        return await self.put(filename, content, overwrite=overwrite)

    # ------------------------------------------------------------ the file system

    async def roots(self) -> dict[str, Any]:
        """``{roots: [...], home}``: the directories this edge stages files in, and what ``~`` is there."""
        return expect_dict(await self.get_json("roots"), "staging roots")

    async def listdir(self, path: str = "~") -> dict[str, Any]:
        """``{path, entries: [{name, type (file|dir|symlink|other), size, mtime, mode}], truncated}``.

        Symlinks are listed as ``symlink`` (never followed); ``size`` is None for directories.
        """
        answer = await self.get_json(self.session_path("list"), params={"path": path})
        return expect_dict(answer, "staging list")

    async def stat(self, path: str) -> dict[str, Any]:
        """``{path, name, type, size, mtime, mode}`` (and ``sha256`` when the edge knows it already);
        :class:`~radical_edge_client.NotFound` if there is nothing at ``path``."""
        return expect_dict(await self.get_json(self.session_path("stat"), params={"path": path}), "staging stat")

    async def mkdir(self, path: str, *, parents: bool = False, exist_ok: bool = False) -> dict[str, Any]:
        """Make a directory (``parents``: the missing ones above it too) -> ``{path, created}``."""
        params = {"path": path, "parents": parents, "exist_ok": exist_ok}
        return expect_dict(await self.post_json(self.session_path("mkdir"), params=params), "staging mkdir")

    async def delete(self, path: str, *, recursive: bool = False) -> dict[str, Any]:
        """Delete a file or a symlink, a directory (with all in it) only with ``recursive=True``; never a root.

        Returns ``{path, removed}`` (``removed``: what it was, ``file``, ``symlink`` or ``dir``).
        """
        params = {"path": path, "recursive": recursive}
        return expect_dict(await self.post_json(self.session_path("delete"), params=params), "staging delete")

    async def move(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Rename ``src`` to ``dst`` on the edge (same file system; an existing ``dst`` only with ``overwrite``)."""
        params = {"src": src, "dst": dst, "overwrite": overwrite}
        return expect_dict(await self.post_json(self.session_path("move"), params=params), "staging move")

    async def checksum(self, path: str, *, attempts: int = 60) -> str:
        """The SHA-256 (hex) of a file on the edge (computed there once per version of the file, then cached).

        Hashing a very large file can outlast the bridge's answer timeout (504): the edge goes on hashing
        and a new request waits for that same computation, so it is asked again, up to ``attempts`` times.
        """
        for attempt in range(max(1, attempts)):
            try:
                got = await self.get_json(self.session_path("checksum"), params={"path": path})
                break
            except RequestTimeout:
                if attempt >= attempts - 1:
                    raise
        return str(expect_dict(got, "staging checksum")["sha256"])

    # ------------------------------------------------------------ partial uploads

    async def upload_state(self, path: str) -> dict[str, Any]:
        """``{path, offset, active, exists}``: how many bytes of an upload to ``path`` the edge holds (0: none),
        whether an upload to it runs now, whether something is at ``path`` already."""
        answer = await self.get_json(self.session_path("upload"), params={"path": path})
        return expect_dict(answer, "staging upload state")

    async def abandon_upload(self, path: str) -> bool:
        """Drop the partial upload to ``path`` on the edge; whether there was one."""
        response = await self.request("DELETE", self.session_path("upload"), params={"path": path})
        return bool(expect_dict(response.json(), "staging abandon").get("removed"))

    async def commit(self, path: str, *, sha256: str | None = None, overwrite: bool = False) -> dict[str, Any]:
        """Put a complete upload made with ``commit=false`` in place (after comparing ``sha256``)."""
        params: dict[str, Any] = {"path": path, "overwrite": overwrite}
        if sha256 is not None:
            params["sha256"] = sha256
        return expect_dict(await self.post_json(self.session_path("commit"), params=params), "staging commit")

    # ------------------------------------------------------------ streamed transfers

    async def upload(  # type: ignore[override]  # (source, remote) like cp; the generic upload is request()
        self,
        source: UploadSource,
        remote: str,
        *,
        overwrite: bool = False,
        resume: bool = True,
        verify: bool = True,
        parents: bool = True,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload ``source`` to ``remote`` on the edge; returns ``{path, size, sha256}``.

        ``source`` is a local path, bytes, a binary file object (``read``, sync
        or async) or an (async) iterator of bytes; it is streamed, never held
        whole.  The file appears at ``remote`` only once complete (and
        verified): until then it is a partial file beside it.  An existing
        ``remote`` is replaced only with ``overwrite``; missing directories
        above it are made unless ``parents=False``.

        ``resume``: continue an upload that was cut short (a path or a seekable
        file: the edge says how many bytes it holds, only the rest is sent).
        ``verify``: hash what is sent and compare with the edge's hash before
        the file is put in place (:class:`~radical_edge_client.ChecksumMismatch`
        on a difference; the partial upload is dropped).
        """
        src = await _Source.open(source)
        try:
            digest = hashlib.sha256() if verify else None
            offset = await self._start_offset(remote, overwrite=overwrite, resume=resume and src.seekable)
            if src.size is not None and offset > src.size:
                offset = 0  # not a prefix of this source: start over
            if offset:
                await src.skip(offset, digest)
            params: dict[str, Any] = {
                "path": remote,
                "offset": offset,
                "overwrite": overwrite,
                "parents": parents,
                "commit": not verify,
            }
            if src.size is not None:
                params["size"] = src.size
            async with src.chunks(digest) as chunks:
                answer = await self._send(chunks, params, start=offset, total=src.size, progress=progress)
        finally:
            await src.aclose()
        if digest is None:
            return _result(answer)
        return await self._verify_and_commit(remote, answer, digest.hexdigest(), overwrite)

    async def download(  # type: ignore[override]  # (remote, target) like cp; the generic download is stream()
        self,
        remote: str,
        target: DownloadTarget,
        *,
        overwrite: bool = False,
        resume: bool = True,
        verify: bool = True,
        progress: ProgressCallback | None = None,
        range: tuple[int, int | None] | None = None,
    ) -> dict[str, Any]:
        """Download ``remote`` into ``target``; returns ``{path, size, sha256}``.

        ``target`` is a local path (an existing directory: the file is named
        after the last component of ``remote``, never after anything the edge
        sends; a ``remote`` whose last component is ``..``, ``.`` or ``~`` is a
        ``ValueError``) or a binary file object (``write``, sync or async).  A
        path is written as ``.{name}.radical-partial`` beside it (created with
        ``O_EXCL | O_NOFOLLOW``: whatever else is at that name, a symlink
        included, is removed, never written through) and renamed when complete
        and verified; an existing file is replaced only with ``overwrite``.
        ``resume`` continues such a partial file (a ``Range`` request for the
        rest) when it is a regular file of this user with no other hard link.
        ``verify`` compares the SHA-256 of what arrived with the edge's
        (:class:`~radical_edge_client.ChecksumMismatch`; into a path, nothing is
        put in place; into a file object, what was written stays written).

        ``range=(start, end)`` downloads only bytes ``start`` up to ``end``
        (exclusive; None: the end of the file), without resume or verification;
        ``size`` in the answer is then the number of bytes written.  Into a path,
        it writes the file directly (an existing one only with ``overwrite``).
        """
        if range is not None:
            return await self._download_range(remote, target, range, progress, overwrite)
        if not isinstance(target, str | os.PathLike):
            digest = hashlib.sha256() if verify else None
            sink = _Sink(target, digest)
            size, expected = await self._fetch(remote, sink, 0, progress)
            return await self._verified(remote, size, digest, expected, None)
        final = Path(target).expanduser()
        if await anyio.to_thread.run_sync(final.is_dir):
            final = final / _local_name(remote)
        if not overwrite and await anyio.to_thread.run_sync(os.path.lexists, final):
            raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
        part = local_partial(final)
        fh, offset = await anyio.to_thread.run_sync(_open_partial, part, resume)
        try:
            digest = hashlib.sha256() if verify else None
            if offset and digest is not None:
                await anyio.to_thread.run_sync(_hash_prefix, fh, offset, digest)
            sink = _Sink(fh, digest)
            size, expected = await self._fetch(remote, sink, offset, progress, local=fh)
            await anyio.to_thread.run_sync(_finish_local, fh)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_keeping_data, fh, part)
            raise
        answer = await self._verified(remote, size, sink.digest, expected, part)
        await anyio.to_thread.run_sync(_put_in_place, part, final, overwrite)
        return {**answer, "path": str(final)}

    async def copy(
        self,
        src_path: str,
        dst: AsyncStagingClient | Blocking,
        dst_path: str,
        *,
        overwrite: bool = False,
        resume: bool = True,
        verify: bool = True,
        parents: bool = True,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Copy ``src_path`` on this edge to ``dst_path`` on the edge of ``dst`` (another staging client).

        The bytes stream from one edge through the bridge into the other, passing
        through this client's memory (a bounded amount) but never its disk.
        ``overwrite``, ``resume``, ``verify`` and ``parents`` are as for
        :meth:`upload`; ``verify`` compares the two edges' SHA-256 before the
        copy is put in place.  In blocking code, get both staging clients from
        the same :class:`~radical_edge_client.BridgeClient`.  Returns ``{path, size, sha256}``
        (of the copy).
        """
        if isinstance(dst, Blocking):
            dst = dst._async
        if not isinstance(dst, AsyncStagingClient):
            raise TypeError("dst must be a staging client (edge.get_plugin('staging'))")
        offset = await dst._start_offset(dst_path, overwrite=overwrite, resume=resume)
        params: dict[str, Any] = {"path": dst_path, "overwrite": overwrite, "parents": parents, "commit": not verify}
        answer: dict[str, Any] | None = None
        source_digest: str | None = None
        while answer is None:
            headers = {"range": f"bytes={offset}-"} if offset else None
            try:
                async with self._get_file(src_path, headers, remember=verify and not offset) as got:
                    if got.status == 200:
                        offset = 0  # the edge ignored the range and sends the whole file: the copy starts over
                    total = _total_of(got, offset)
                    source_digest = _digest_of(got)
                    if verify and source_digest is not None:
                        params.update(sha256=source_digest, commit=True)  # the destination checks it itself
                    params.update(offset=offset, size=total)
                    answer = await dst._send(got.aiter_bytes(), params, start=offset, total=total, progress=progress)
            except HTTPError as exc:
                if exc.status != 416 or not offset:
                    raise
                # the partial copy is as long as the source (or longer): finish it, or start over
                info = await self.stat(src_path)
                if info.get("size") == offset:
                    params.update(offset=offset, size=offset)
                    answer = await dst._send(_nothing(), params, start=offset, total=offset, progress=progress)
                else:
                    await dst.abandon_upload(dst_path)
                    offset = 0
        if not verify or answer.get("committed"):
            return _result(answer)
        expected = source_digest or await self.checksum(src_path)
        return await dst._verify_and_commit(dst_path, answer, expected, overwrite)

    # ------------------------------------------------------------ internals

    def _get_file(
        self, remote: str, headers: dict[str, str] | None, *, remember: bool = False
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """``GET file/{sid}`` of ``remote``, streamed, with no total timeout (the caller counts silence).
        ``remember``: the edge hashes the file as it sends it, when it does not know the digest yet, so that
        :meth:`checksum` afterwards answers without reading the file again."""
        params = {"path": remote, **({"remember_sha256": "true"} if remember else {})}
        return self.stream("GET", self.session_path("file"), params=params, headers=headers, timeout=None)

    async def _start_offset(self, remote: str, *, overwrite: bool, resume: bool, settle: float = 5.0) -> int:
        """Where an upload to ``remote`` starts: what the edge holds of it when resuming, else 0.

        Refused here, before any byte is sent, when the edge says the target
        exists (and not ``overwrite``) or another upload to it runs.  A resume
        gives an upload the edge is still winding up (its caller just went
        away) ``settle`` seconds to let go of the partial file.
        """
        state = await self.upload_state(remote)
        if resume:
            with anyio.move_on_after(settle):
                while state.get("active"):
                    await anyio.sleep(0.05)
                    state = await self.upload_state(remote)
        where = state.get("path", remote)
        if state.get("active"):
            raise HTTPError(f"an upload to {where} is in progress", 409)
        if state.get("exists") and not overwrite:
            raise HTTPError(f"exists (pass overwrite=True to replace it): {where}", 409)
        return int(state.get("offset") or 0) if resume else 0

    async def _send(
        self,
        chunks: AsyncIterable[bytes],
        params: dict[str, Any],
        *,
        start: int,
        total: int | None,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        """``PUT upload/{sid}`` with ``chunks`` as the body; the answer (a silence timeout, not a total one)."""
        silence = _Silence(self.bridge.timeout)

        async def body() -> AsyncIterator[bytes]:
            done = start
            await _report(progress, done, total)
            async for chunk in chunks:
                silence.poke()
                yield chunk
                done += len(chunk)
                silence.poke()
                await _report(progress, done, total)
            silence.poke()

        where = f"upload to {params.get('path')!r}"
        try:
            with silence.scope:
                response = await self.request(
                    "PUT", self.session_path("upload"), data=body(), params=params, timeout=math.inf
                )
        except HTTPError as exc:
            if exc.status == 422 and "checksum mismatch" in str(exc.detail):
                raise ChecksumMismatch(exc.detail, exc.status) from None
            raise
        silence.check(where)
        return expect_dict(response.json(), "staging upload")

    async def _verify_and_commit(
        self, remote: str, answer: dict[str, Any], expected: str, overwrite: bool
    ) -> dict[str, Any]:
        if answer.get("sha256") != expected:
            with contextlib.suppress(RadicalEdgeError):
                await self.abandon_upload(remote)
            raise ChecksumMismatch(
                f"{remote}: the edge received sha256 {answer.get('sha256')}, the source has {expected}; "
                "the partial upload was dropped (a resumed upload whose earlier part came from another file?): "
                "the next try starts over"
            )
        if answer.get("committed"):
            return _result(answer)
        return await self.commit(remote, sha256=expected, overwrite=overwrite)

    async def _fetch(
        self,
        remote: str,
        sink: _Sink,
        offset: int,
        progress: ProgressCallback | None,
        *,
        local: Any = None,
    ) -> tuple[int, str | None]:
        """Stream ``remote`` from ``offset`` into ``sink``; the file's size and the digest the edge sent.

        ``local`` is the partial file being continued (truncated if the edge
        sends the whole file again, or when the partial file is longer than it).
        """
        while True:
            headers = {"range": f"bytes={offset}-"} if offset else None
            silence = _Silence(self.bridge.timeout)
            try:
                with silence.scope:
                    remember = sink.digest is not None and not offset
                    async with self._get_file(remote, headers, remember=remember) as answer:
                        if answer.status == 200 and offset:
                            offset = await self._restart(local, sink)
                        total = _total_of(answer, offset)
                        expected = _digest_of(answer)
                        await _report(progress, offset, total)
                        done = await sink.drain(answer, silence, offset, total, progress)
                silence.check(f"download of {remote!r}")
            except HTTPError as exc:
                if exc.status != 416 or not offset or local is None:
                    raise
                info = await self.stat(remote)
                if info.get("size") == offset:  # the partial file is complete already
                    return offset, info.get("sha256")
                offset = await self._restart(local, sink)
                continue
            return done, expected

    async def _restart(self, local: Any, sink: _Sink) -> int:
        """Start a download over: the local partial file emptied, the digest reset; returns the new offset (0)."""
        if local is None:
            raise BridgeProtocolError("the edge ignored the range of a resumed download")

        def truncate() -> None:
            local.seek(0)
            local.truncate()

        await anyio.to_thread.run_sync(truncate)
        if sink.digest is not None:
            sink.digest = hashlib.sha256()
        return 0

    async def _verified(
        self, remote: str, size: int, digest: Any, expected: str | None, part: Path | None
    ) -> dict[str, Any]:
        if digest is None:
            return {"path": remote, "size": size, "sha256": None}
        got = digest.hexdigest()
        if expected is None:
            expected = await self.checksum(remote)
        if got != expected:
            if part is not None:
                with contextlib.suppress(FileNotFoundError):
                    await anyio.to_thread.run_sync(part.unlink)
            raise ChecksumMismatch(
                f"{remote}: received {size} bytes with sha256 {got}, the edge's file has {expected}"
                + ("; the partial download was removed: the next try starts over" if part is not None else "")
            )
        return {"path": remote, "size": size, "sha256": got}

    async def _download_range(
        self,
        remote: str,
        target: DownloadTarget,
        span: tuple[int, int | None],
        progress: ProgressCallback | None,
        overwrite: bool,
    ) -> dict[str, Any]:
        start, end = span
        if start < 0 or (end is not None and end <= start):
            raise ValueError("range must be (start, end) with 0 <= start < end, or (start, None)")
        headers = {"range": f"bytes={start}-{'' if end is None else end - 1}"}
        owned = isinstance(target, str | os.PathLike)
        fh: Any = target
        if isinstance(target, str | os.PathLike):  # an existing file is replaced only with overwrite
            fh = await anyio.to_thread.run_sync(open, Path(target).expanduser(), "wb" if overwrite else "xb")
        try:
            sink = _Sink(fh, None)
            silence = _Silence(self.bridge.timeout)
            with silence.scope:
                async with self._get_file(remote, headers) as answer:
                    if answer.status != 206 and start:
                        raise BridgeProtocolError(f"{answer.where}: the edge did not send the range asked for")
                    done = await sink.drain(answer, silence, 0, _content_length(answer), progress)
            silence.check(f"download of {remote!r}")
        finally:
            if owned:
                await anyio.to_thread.run_sync(fh.close)
        return {"path": remote, "start": start, "size": done}


def _result(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in ("path", "size", "sha256") if k in answer}


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


__all__ = [
    "CHUNK",
    "PARTIAL_SUFFIX",
    "AsyncStagingClient",
    "DownloadTarget",
    "ProgressCallback",
    "UploadSource",
    "local_partial",
]
