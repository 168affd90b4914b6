"""Moving bytes: uploads into a partial file renamed when complete, downloads from one open descriptor.

Uploads
    land in ``.{name}.radical-partial`` beside the target (mode 0600, created
    with ``O_EXCL | O_NOFOLLOW``; an existing one is used only if it is the
    edge user's own regular file with one link), locked while one upload
    writes it (in this process, and with ``flock`` across processes where the
    file system has it); no move, delete or upload through the edge touches a
    locked partial file.  The body is written as it arrives in batches of about
    ``batch_bytes`` (one ``writev`` per batch in a worker thread, no joining
    of chunks), and hashed (SHA-256) in the same thread hop.  A resumed upload
    (``offset`` > 0) must continue exactly where the partial ends; its earlier
    bytes are hashed from disk a few MiB per batch while the rest arrives,
    and whatever is left of that at the end.  Complete and verified, the
    partial is fsynced and renamed onto the target: atomically without
    replacing (``renameat2(RENAME_NOREPLACE)``, else link + unlink), or
    replacing when asked.  Cut short, the partial stays for a resume.

Downloads
    read the file through the descriptor opened when the request was
    checked, in ``chunk`` pieces (``pread`` in a worker thread, one piece read
    ahead while the previous is sent), so a concurrent rename or replace of
    the path cannot switch files mid-response.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from radical_edge_tunnel import ReadAhead

from ._paths import NAME_MAX, PathRefused, Target, fsync_dir, refusal, rename_noreplace

PARTIAL_SUFFIX = ".radical-partial"
#: bytes read per piece when hashing or sending a file
CHUNK = 1024 * 1024
#: most earlier bytes of a resumed upload hashed from disk per batch written
CATCH_UP_PER_BATCH = 4 * CHUNK
#: most buffers one writev takes (IOV_MAX is 1024 on Linux)
_IOV_MAX = 512
#: a file changed less than this long before it is read may change again without a new version (timestamps are
#: whole seconds on some file systems, a clock tick on older kernels): a digest read from it is not cached
SETTLE_SECONDS = 2.0
#: what a hashed partial name holds between its dot and its suffix
_HASHED = re.compile(r"[0-9a-f]{40}", re.ASCII)


def partial_name(name: str) -> str:
    """The name of the partial file of an upload to ``name`` (deterministic, so a resume finds it).

    ``.{name}.radical-partial``; for a name too long for that, and for a name that
    is itself 40 hex digits (whose plain form would be the hashed form of some
    long name, so the two uploads would share one partial file), the first 40 hex
    digits of the name's SHA-256 stand in for it.
    """
    candidate = f".{name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(candidate)) <= NAME_MAX and not _HASHED.fullmatch(name):
        return candidate
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:40]}{PARTIAL_SUFFIX}"


def is_partial_name(name: str) -> bool:
    """Whether ``name`` has the form of a partial file's name (``.*.radical-partial``)."""
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1


def sha256_of(fd: int, start: int, end: int, digest: Any, chunk: int = CHUNK) -> int:
    """Feed bytes ``[start, end)`` of ``fd`` to ``digest``; returns where it stopped (short at EOF)."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(chunk, end - pos), pos)
        if not data:
            break
        digest.update(data)
        pos += len(data)
    return pos


def version_key(info: os.stat_result) -> tuple[int, ...]:
    """What identifies one version of a file's content: device, inode, size, mtime and ctime (ns)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class ChecksumCache:
    """SHA-256 digests by :func:`version_key`, the most recent ``size`` kept; thread-safe.

    A digest the edge computed itself while writing the file (an upload) is :meth:`put`; one computed by
    reading a file is offered with :meth:`put_read`, which keeps it only when the file surely had one content
    while it was read (``settle``: seconds the file must have been unchanged before).
    """

    def __init__(self, size: int = 4096, settle: float = SETTLE_SECONDS) -> None:
        self.size = size
        self.settle_ns = int(settle * 1e9)
        self._items: OrderedDict[tuple[int, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: os.stat_result) -> str | None:
        key = version_key(info)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, info: os.stat_result, digest: str) -> None:
        with self._lock:
            self._items[version_key(info)] = digest
            self._items.move_to_end(version_key(info))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def put_read(self, before: os.stat_result, after: os.stat_result, digest: str, started_ns: int) -> bool:
        """Keep ``digest``, computed by reading a file from ``started_ns`` (:func:`time.time_ns`) on, with status
        ``before`` then and ``after`` once read, if the file kept its version while it was read and had not
        changed for ``settle`` seconds before (a write soon after another may leave its timestamps as they
        were); whether it was kept."""
        if version_key(after) != version_key(before):
            return False
        if started_ns - max(before.st_mtime_ns, before.st_ctime_ns) < self.settle_ns:
            return False
        self.put(before, digest)
        return True

    def digest(self, fd: int, info: os.stat_result) -> str:
        """The SHA-256 of the open file ``fd`` (status ``info``): cached, or computed now (blocking)."""
        found = self.get(info)
        if found is not None:
            return found
        started = time.time_ns()
        digest = hashlib.sha256()
        sha256_of(fd, 0, info.st_size, digest)
        hexdigest = digest.hexdigest()
        self.put_read(info, os.fstat(fd), hexdigest, started)
        return hexdigest


class Locks:
    """Which partial files an upload of this process is writing (by directory device, inode and name)."""

    def __init__(self) -> None:
        self._held: set[tuple[int, int, str]] = set()
        self._lock = threading.Lock()

    def acquire(self, key: tuple[int, int, str]) -> bool:
        return self.acquire_all([key])

    def acquire_all(self, keys: list[tuple[int, int, str]]) -> bool:
        """All of ``keys`` (True), or none of them when one is held already (False)."""
        with self._lock:
            if any(key in self._held for key in keys):
                return False
            self._held.update(keys)
            return True

    def release(self, key: tuple[int, int, str]) -> None:
        self.release_all([key])

    def release_all(self, keys: list[tuple[int, int, str]]) -> None:
        with self._lock:
            self._held.difference_update(keys)

    def held(self, key: tuple[int, int, str]) -> bool:
        with self._lock:
            return key in self._held


def lock_key(target: Target) -> tuple[int, int, str]:
    """What :class:`Locks` holds for an upload to ``target``."""
    info = os.fstat(target.dir_fd)
    return (info.st_dev, info.st_ino, partial_name(target.name))


def name_keys(*targets: Target) -> list[tuple[int, int, str]]:
    """The :class:`Locks` keys an operation on these names must hold: those of the names that are partial
    files' names, so no move, delete or upload replaces or removes the partial file of a running upload
    (which would then put *that* file in place, while it answers with the hash of its own bytes)."""
    keys = []
    for target in targets:
        if not target.is_root and is_partial_name(target.name):
            info = os.fstat(target.dir_fd)
            keys.append((info.st_dev, info.st_ino, target.name))
    return keys


def upload_keys(target: Target) -> list[tuple[int, int, str]]:
    """The :class:`Locks` keys an upload to (or a commit of) ``target`` holds."""
    return [lock_key(target), *name_keys(target)]


def owned_by_us(info: os.stat_result) -> bool:
    """Whether a file is the edge user's: in a directory others may write in (``/tmp``), one of them may
    have put a file of theirs under a partial name, to read what is uploaded into it or have it committed."""
    return info.st_uid == os.geteuid()


class PartialReplaced(PathRefused):
    """The partial file's name no longer leads to the file the upload wrote (409; nothing of it is kept)."""

    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


class Upload:
    """One upload into the partial file of ``target`` (all methods block: run them in worker threads)."""

    def __init__(self, target: Target, locks: Locks, cache: ChecksumCache, *, offset: int, size: int | None) -> None:
        self.target = target
        self.locks = locks
        self.cache = cache
        self.offset = offset
        self.size = size
        self.partial = partial_name(target.name)
        self.fd = -1
        self.written = offset  # bytes in the partial file
        self.hashed = 0  # bytes of it fed to the digest
        self.digest = hashlib.sha256()
        self._keys: list[tuple[int, int, str]] = []

    # ------------------------------------------------------------ open

    def open(self) -> None:
        """Lock and open the partial file, checked for a resume at ``offset``; :class:`PathRefused` if not."""
        keys = upload_keys(self.target)
        if not self.locks.acquire_all(keys):
            raise PathRefused(409, f"an upload to {self.target.path} is in progress")
        self._keys = keys
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        dir_fd, name, shown = self.target.dir_fd, self.partial, self.target.path
        # O_NONBLOCK: a FIFO planted under the name must not block the open (no effect on a regular file)
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        created = False
        try:
            if self.offset == 0:
                try:
                    self.fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
                    created = True
                except FileExistsError:
                    self.fd = os.open(name, flags, dir_fd=dir_fd)  # a stale partial: started over below
            else:
                self.fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            raise PathRefused(409, f"nothing to resume for {shown}: start at offset 0") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathRefused(403, f"the partial file of {shown} is a symlink", escape=True) from None
            raise refusal(exc, shown) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PathRefused(409, f"an upload to {shown} is in progress (another process)") from None
        except OSError:
            pass  # a file system without flock (some Lustre mounts): the in-process lock still holds
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            # a hard link planted under the partial name would let the upload write somewhere else
            raise PathRefused(403, f"the partial file of {shown} is not a plain file", escape=True)
        # one made just now is ours whatever owner the file system reports (an NFS mount whose id mapping
        # fails shows every file as nobody's); one that was there may have been planted by another user
        if not created and not owned_by_us(info):
            raise PathRefused(403, f"the partial file of {shown} belongs to another user", escape=True)
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(self.fd, 0o600)  # private while it arrives
        if self.offset == 0:
            os.ftruncate(self.fd, 0)
        elif info.st_size != self.offset:
            raise PathRefused(
                409,
                f"offset {self.offset} does not match the partial upload of {shown}: resume at offset {info.st_size}",
            )
        os.lseek(self.fd, self.offset, os.SEEK_SET)

    # ------------------------------------------------------------ write

    def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` and hash what can be hashed (catching up on a resumed upload's earlier bytes)."""
        if not chunks:
            return
        _writev_all(self.fd, chunks)
        start = self.written
        self.written += sum(len(c) for c in chunks)
        if self.hashed == start:
            for chunk in chunks:
                self.digest.update(chunk)
            self.hashed = self.written
        else:
            self.hashed = sha256_of(
                self.fd, self.hashed, min(self.written, self.hashed + CATCH_UP_PER_BATCH), self.digest
            )

    def finish_hash(self) -> str:
        """Hash whatever is not hashed yet; the SHA-256 of the whole partial file."""
        self.hashed = sha256_of(self.fd, self.hashed, self.written, self.digest)
        if self.hashed != self.written:
            raise PathRefused(409, f"the partial upload of {self.target.path} shrank while it was written")
        return self.digest.hexdigest()

    def keep(self) -> None:
        """Make what was written durable, for a resume (the upload was cut short)."""
        with contextlib.suppress(OSError):
            os.fsync(self.fd)

    def discard(self) -> None:
        """Remove the partial file (its content is wrong)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial, dir_fd=self.target.dir_fd)

    def commit(self, *, overwrite: bool) -> os.stat_result:
        """fsync the partial file and rename it onto the target; returns the target's status."""
        os.fsync(self.fd)
        return commit_partial(self.target, self.partial, overwrite=overwrite, fd=self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)  # also releases the flock
        if self._keys:
            self.locks.release_all(self._keys)
            self._keys = []


def process_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; 0o022 where that is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def commit_partial(target: Target, partial: str, *, overwrite: bool, fd: int) -> os.stat_result:
    """Rename ``partial`` (in the target's directory; open as ``fd``) onto the target; 409 if it exists and
    not ``overwrite``.  Returns the status of the file now at the target (``fd``'s, after the rename).

    A rename goes by name, so the name is checked to lead to ``fd``'s file just before it, and the target
    just after (:class:`PartialReplaced`, 409, if not): what was hashed is what is put in place.
    """
    dir_fd, shown = target.dir_fd, target.path
    existing = target.lstat()
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise PathRefused(409, f"a directory is in the way: {shown}")
    mine = os.fstat(fd)
    try:
        named = os.stat(partial, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        named = None
    if named is None or not _same_file(named, mine):
        raise PartialReplaced(
            f"the partial file of {shown} was removed or replaced meanwhile: nothing was put in place"
        )
    try:
        # private while it arrives; in place, the file gets the mode any new file of the edge's user gets
        os.fchmod(fd, 0o666 & ~process_umask())
        if overwrite:
            os.rename(partial, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            rename_noreplace(dir_fd, partial, dir_fd, target.name)
    except FileExistsError:
        _private(fd)
        raise PathRefused(409, f"exists (pass overwrite=true to replace it): {shown}") from None
    except OSError as exc:
        _private(fd)
        raise refusal(exc, shown) from None
    fsync_dir(dir_fd)
    placed = target.lstat()
    if placed is None or not _same_file(placed, mine):
        raise PartialReplaced(f"{shown} was replaced just as the upload was put in place")
    return os.fstat(fd)


def _private(fd: int) -> None:
    """Back to 0600: a partial file that stays (its commit was refused) is as private as while it arrived."""
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)


def partial_state(target: Target, locks: Locks) -> dict[str, Any]:
    """``{path, offset, active, exists}``: how far an upload to ``target`` got, whether one is running, and
    whether something is at the target already."""
    try:
        info = os.stat(partial_name(target.name), dir_fd=target.dir_fd, follow_symlinks=False)
        offset = info.st_size if stat.S_ISREG(info.st_mode) else 0
    except FileNotFoundError:
        offset = 0
    except OSError as exc:
        raise refusal(exc, target.path) from None
    return {
        "path": target.path,
        "offset": offset,
        "active": locks.held(lock_key(target)),
        "exists": target.lstat() is not None,
    }


def abandon_partial(target: Target, locks: Locks) -> bool:
    """Remove the partial file of ``target``; 409 while an upload writes it."""
    keys = upload_keys(target)
    if not locks.acquire_all(keys):
        raise PathRefused(409, f"an upload to {target.path} is in progress")
    try:
        os.unlink(partial_name(target.name), dir_fd=target.dir_fd)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise refusal(exc, target.path) from None
    finally:
        locks.release_all(keys)


# ---------------------------------------------------------------- ranges


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)
#: digits of a byte position past which it lies beyond any file (int() refuses more than 4300: a 500)
_MAX_DIGITS = 20


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 1 << 70


class RangeNotSatisfiable(Exception):
    """The request's single byte range lies outside the file (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, end_exclusive)`` a ``Range`` header asks for, or None for the whole file.

    One range only (``bytes=a-b``, ``a-``, ``-n``); a header that is not one
    of those (several ranges, other units, bad syntax) is ignored, as RFC 9110
    lets a server do.  Raises :class:`RangeNotSatisfiable` for one outside the file.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = _position(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size
    start = _position(first)
    end = _position(last) + 1 if last else size
    if last and end <= start:
        return None  # last < first: invalid, ignored
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size)


# ---------------------------------------------------------------- the download response


def _release(fd: int, on_close: Callable[[], None] | None) -> None:
    os.close(fd)
    if on_close is not None:
        on_close()


class FileStream(Response):
    """Send ``length`` bytes of the open file ``fd`` from ``start``; closes ``fd`` when done.

    ``on_close`` runs once when the response is over (sent, cut or never sent
    because the request failed first: call :meth:`release`).  ``remember``
    (a cache and the status the file had when opened): the pieces are hashed
    (SHA-256) as they are read, in the same worker thread, and once the last
    one is read the digest is offered to the cache
    (:meth:`ChecksumCache.put_read`); only for a response of the whole file.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        length: int,
        *,
        status_code: int,
        headers: dict[str, str],
        head_only: bool,
        chunk: int = CHUNK,
        on_close: Callable[[], None] | None = None,
        remember: tuple[ChecksumCache, os.stat_result] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type="application/octet-stream")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", str(length).encode()))
        self.fd = fd
        self.start = start
        self.length = length
        self.head_only = head_only
        self.chunk = chunk
        self.remember = remember if remember is not None and start == 0 and length == remember[1].st_size else None
        self._opened_ns = time.time_ns()
        # released once: after the response, or when it is dropped unsent (the request failed or was cancelled)
        self._release = weakref.finalize(self, _release, fd, on_close)

    def release(self) -> None:
        self._release()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.head_only or not self.length:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._send_body(send)
        finally:
            self.release()

    async def _send_body(self, send: Send) -> None:
        fd, end = self.fd, self.start + self.length

        at = self.start
        digest = hashlib.sha256() if self.remember is not None else None

        def read() -> bytes | None:
            nonlocal at
            if at >= end:
                return None
            data = os.pread(fd, min(self.chunk, end - at), at)
            if not data:
                raise OSError(errno.EIO, f"the file ended {end - at} bytes early (truncated meanwhile?)")
            at += len(data)
            if digest is not None and self.remember is not None:
                digest.update(data)
                if at >= end:  # before the last piece goes out: a checksum asked right after finds it
                    cache, info = self.remember
                    with contextlib.suppress(OSError):  # only ever a saving: the download goes on without it
                        cache.put_read(info, os.fstat(fd), digest.hexdigest(), self._opened_ns)
            return data

        sent = self.start
        async with ReadAhead(read) as pieces:  # the next piece is read while this one goes out
            async for data in pieces:
                sent += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": sent < end})


__all__ = [
    "CHUNK",
    "PARTIAL_SUFFIX",
    "ChecksumCache",
    "FileStream",
    "Locks",
    "PartialReplaced",
    "RangeNotSatisfiable",
    "Upload",
    "abandon_partial",
    "commit_partial",
    "is_partial_name",
    "lock_key",
    "name_keys",
    "owned_by_us",
    "parse_range",
    "partial_name",
    "partial_state",
    "sha256_of",
    "upload_keys",
    "version_key",
]
