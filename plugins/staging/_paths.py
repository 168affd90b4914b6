"""Paths confined to the staging roots, resolved through directory file descriptors.

A user path is absolute, ``~`` or ``~/...`` (the edge user's home), or
relative (to the first root, like ``scp host:file`` is relative to the home
directory).  It is normalised lexically (``.`` and ``..`` folded, so
``~/a/../b`` is ``~/b`` and ``~/../other`` leaves the home root) and must then
lie inside one of the roots; the longest matching root wins.

What follows the root is *walked*, not looked up: the root is opened as a
directory, then each component is opened relative to the previous one with
``O_NOFOLLOW | O_DIRECTORY``, holding the file descriptor.  A symbolic link
anywhere on the way (or as the final component, for anything that would read
or write through it) is refused (403), and because every later step works on
the held descriptors (``openat``, ``renameat``, ``unlinkat``, ``mkdirat``,
``fstatat`` with ``follow_symlinks=False``), swapping a directory for a
symlink after it was opened cannot redirect the request: the walk keeps the
directory it found.  There is no realpath-then-open window.

:class:`Target` is the result: the open parent directory, the final name and
the path as the edge reports it.  The root directories themselves are
trusted configuration (the edge operator chose them).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("radical_edge.plugins.staging")

#: opening a directory to walk through (O_PATH needs only search permission, not read)
_O_PATH = getattr(os, "O_PATH", 0)
_WALK_FLAGS = (_O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: longest file name most file systems take (NAME_MAX)
NAME_MAX = 255
#: longest path the kernel takes (PATH_MAX, with its NUL): a longer one is refused before anything is walked
#: or made (one ``put`` of ``a/a/a/...`` would otherwise make a directory per two bytes of its body)
PATH_MAX = 4096


class PathRefused(Exception):
    """A path that cannot be served: ``status`` (400, 403, 404, 409, ...) and ``detail`` for the caller.

    ``escape`` marks an attempt to leave the roots (outside them, or through a symlink): the plugin
    logs those as warnings.
    """

    def __init__(self, status: int, detail: str, *, escape: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.escape = escape


#: errno -> HTTP status for file operations that failed
_ERRNO_STATUS = {
    errno.ENOENT: 404,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EROFS: 403,
    errno.EEXIST: 409,
    errno.ENOTEMPTY: 409,
    errno.EISDIR: 409,
    errno.ENOTDIR: 400,
    errno.ELOOP: 403,
    errno.EXDEV: 400,
    errno.EINVAL: 400,
    errno.ENAMETOOLONG: 400,
    errno.ENOSPC: 507,
    errno.EDQUOT: 507,
    errno.EFBIG: 413,
    errno.EBUSY: 409,
    errno.ENXIO: 400,  # a socket (or a device without its driver) under the name
}


def refusal(exc: OSError, path: str) -> PathRefused:
    """The :class:`PathRefused` for an ``OSError`` met while working on ``path``."""
    status = _ERRNO_STATUS.get(exc.errno or 0, 500)
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.EXDEV:
        why += " (a move between file systems: copy, then delete)"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why += " (the file system or the quota is full)"
    return PathRefused(status, f"{why}: {path}")


@dataclass(frozen=True)
class Root:
    """One staging root: ``path`` is its real path, ``aliases`` other spellings that lead to it
    (the configured path before symlinks were resolved, e.g. ``$HOME`` on a symlinked ``/home``)."""

    path: str
    aliases: tuple[str, ...] = ()

    def prefixes(self) -> tuple[str, ...]:
        return (self.path, *self.aliases)


def _normalise(path: str) -> str:
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading '//' apart; it is the same directory here
        normal = "/" + normal.lstrip("/")
    return normal


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class Roots:
    """The directories staging may touch, and how user paths map into them.

    ``paths`` are expanded (``~``) and resolved once; ones that do not exist
    (or are not directories) are left out with a warning.  ``home`` is what
    ``~`` means (default: ``$HOME``).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, home: str | None = None) -> None:
        self.home = _normalise(os.path.abspath(home or os.path.expanduser("~")))
        roots: list[Root] = []
        for raw in paths:
            given = os.fspath(raw)
            if given == "~" or given.startswith("~/"):
                given = self.home + given[1:]
            spelled = _normalise(os.path.abspath(given))
            real = os.path.realpath(spelled)
            if not os.path.isdir(real):
                log.warning("staging root %r is not a directory: left out", given)
                continue
            if any(r.path == real for r in roots):
                continue
            roots.append(Root(real, (spelled,) if spelled != real else ()))
        self.roots: tuple[Root, ...] = tuple(roots)

    def __bool__(self) -> bool:
        return bool(self.roots)

    def __iter__(self) -> Iterator[Root]:
        return iter(self.roots)

    def absolute(self, user_path: str) -> str:
        """``user_path`` as a normalised absolute path (``~`` expanded, relative to the first root);
        :class:`PathRefused` 400 for one that is no path at all."""
        if not isinstance(user_path, str) or not user_path:
            raise PathRefused(400, "empty path")
        if "\x00" in user_path:
            raise PathRefused(400, "a path cannot contain a NUL character")
        if len(user_path) >= PATH_MAX:
            raise PathRefused(400, f"path too long (at most {PATH_MAX - 1} bytes)")
        try:
            user_path.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (a JSON body can carry one): no name is made of it
            raise PathRefused(400, "a path must be Unicode text (it holds a lone surrogate)") from None
        path = user_path
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        elif path.startswith("~"):
            raise PathRefused(400, f"only '~' (the edge user's home) is understood, not {path.split('/')[0]!r}")
        elif not path.startswith("/"):
            if not self.roots:
                raise PathRefused(403, "no staging roots are configured on this edge", escape=True)
            path = self.roots[0].path + "/" + path
        normal = _normalise(path)
        if len(os.fsencode(normal)) >= PATH_MAX:
            raise PathRefused(400, f"path too long (at most {PATH_MAX - 1} bytes)")
        return normal

    def locate(self, user_path: str) -> tuple[Root, str, list[str]]:
        """The root ``user_path`` lies in, the path inside it (the root's real path plus components)
        and the components; :class:`PathRefused` 403 outside every root."""
        path = self.absolute(user_path)
        best: tuple[int, Root, str] | None = None
        for root in self.roots:
            for prefix in root.prefixes():
                if _inside(path, prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), root, prefix)
        if best is None:
            raise PathRefused(403, f"outside the staging roots: {user_path}", escape=True)
        _, root, prefix = best
        parts = [p for p in path[len(prefix) :].split("/") if p]
        shown = root.path if not parts else posixpath.join(root.path, *parts)
        return root, shown, parts

    def is_root_or_holds_one(self, shown: str) -> bool:
        """Whether ``shown`` (a path inside the roots, as :meth:`locate` returns it) is a root or contains one."""
        return any(_inside(root.path, shown) for root in self.roots)

    def resolve(self, user_path: str, *, create_parents: bool = False) -> Target:
        """Walk to the parent of ``user_path`` through directory file descriptors.

        The caller owns the returned :class:`Target` (close it, or use it as a
        context manager).  ``create_parents`` makes missing directories on the
        way (never through a symlink).  Blocking: call it in a worker thread.
        """
        root, shown, parts = self.locate(user_path)
        fd = os.open(root.path, _WALK_FLAGS)
        try:
            done = root.path
            for part in parts[:-1]:
                nxt = _walk_into(fd, part, posixpath.join(done, part), create=create_parents)
                os.close(fd)
                fd = nxt
                done = posixpath.join(done, part)
        except BaseException:
            os.close(fd)
            raise
        return Target(root, fd, parts[-1] if parts else "", shown)


def _walk_into(dir_fd: int, name: str, shown: str, *, create: bool) -> int:
    """Open directory ``name`` inside ``dir_fd`` without following a symlink."""
    for _ in range(3):  # a directory made and removed by someone else meanwhile: look again
        try:
            return os.open(name, _WALK_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise PathRefused(404, f"no such directory: {shown}") from None
            with contextlib.suppress(FileExistsError):
                try:
                    os.mkdir(name, 0o777, dir_fd=dir_fd)
                except OSError as exc:
                    raise refusal(exc, shown) from None
        except (NotADirectoryError, OSError) as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _not_a_directory(dir_fd, name, shown) from None
            raise refusal(exc, shown) from None
    raise PathRefused(409, f"{shown} keeps changing")


def _not_a_directory(dir_fd: int, name: str, shown: str) -> PathRefused:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return PathRefused(404, f"no such directory: {shown}")
    if stat.S_ISLNK(info.st_mode):
        return PathRefused(403, f"symlink in the path (symlinks are not followed): {shown}", escape=True)
    return PathRefused(400, f"not a directory: {shown}")


def file_type(mode: int) -> str:
    """``file``, ``dir``, ``symlink`` or ``other``."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class Target:
    """A resolved path: ``dir_fd`` (open, the parent directory) and ``name`` in it.

    For a root itself ``name`` is ``""`` and ``dir_fd`` is the root.  ``path``
    is the absolute path reported to callers.  Every method blocks (worker
    threads) and works relative to ``dir_fd``, never through a symlink.
    """

    def __init__(self, root: Root, dir_fd: int, name: str, path: str) -> None:
        self.root = root
        self.dir_fd = dir_fd
        self.name = name
        self.path = path

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.dir_fd >= 0:
            fd, self.dir_fd = self.dir_fd, -1
            os.close(fd)

    @property
    def is_root(self) -> bool:
        return not self.name

    def lstat(self) -> os.stat_result | None:
        """The entry itself (a symlink is not followed), or None when there is none."""
        try:
            if self.is_root:
                return os.fstat(self.dir_fd)
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise refusal(exc, self.path) from None

    def describe(self) -> dict[str, Any]:
        """``{path, name, type, size, mtime, mode}``; 404 if missing."""
        info = self.lstat()
        if info is None:
            raise PathRefused(404, f"no such file or directory: {self.path}")
        return {"path": self.path, "name": posixpath.basename(self.path), **entry_fields(info)}

    def open_dir(self) -> int:
        """A readable descriptor of the target directory (for listing)."""
        try:
            if self.is_root:
                return os.open(".", _READ_DIR_FLAGS, dir_fd=self.dir_fd)
            return os.open(self.name, _READ_DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _not_a_directory(self.dir_fd, self.name, self.path) from None
            if exc.errno == errno.ENOENT:
                raise PathRefused(404, f"no such directory: {self.path}") from None
            raise refusal(exc, self.path) from None

    def open_file(self) -> tuple[int, os.stat_result]:
        """The target opened for reading (a regular file; never through a symlink) and its status."""
        if self.is_root:
            raise PathRefused(400, f"not a regular file: {self.path}")
        try:
            # O_NONBLOCK: opening a FIFO must not hang; it has no effect on regular files
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathRefused(403, f"a symlink (symlinks are not followed): {self.path}", escape=True) from None
            if exc.errno == errno.ENOENT:
                raise PathRefused(404, f"no such file: {self.path}") from None
            raise refusal(exc, self.path) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise PathRefused(400, f"not a regular file: {self.path}")
        return fd, info

    def listdir(self, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The entries (sorted by name, symlinks reported as such) and whether ``limit`` cut them."""
        fd = self.open_dir()
        entries: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(fd) as scan:
                for entry in scan:
                    if len(entries) >= limit:
                        truncated = True
                        break
                    name = printable(entry.name)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        entries.append({"name": name, "type": "unknown", "size": None, "mtime": None, "mode": None})
                        continue
                    entries.append({"name": name, **entry_fields(info)})
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e["name"])
        return entries, truncated


def printable(name: str) -> str:
    """A name from the file system as text JSON can carry: bytes that are not UTF-8 (which Python holds as
    lone surrogates, and which no JSON answer can encode) are shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def entry_fields(info: os.stat_result) -> dict[str, Any]:
    kind = file_type(info.st_mode)
    return {
        "type": kind,
        "size": info.st_size if kind != "dir" else None,
        "mtime": info.st_mtime,
        "mode": stat.S_IMODE(info.st_mode),
    }


def fsync_dir(dir_fd: int) -> None:
    """Make a rename or unlink in this directory durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(".", _READ_DIR_FLAGS, dir_fd=dir_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- deleting a tree

#: opening a directory to delete what is in it: never through a symlink, never blocking (a FIFO swapped in)
_DELETE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: directories a recursive delete holds open at once (two descriptors each: its own and the listing's)
DELETE_DEPTH = 64


def remove_tree(dir_fd: int, name: str) -> None:
    """Delete the directory ``name`` in ``dir_fd`` and everything in it, through descriptors only.

    Each directory is opened relative to its parent's descriptor (``O_NOFOLLOW |
    O_DIRECTORY``) and emptied with ``unlinkat``, so a symlink inside is removed,
    never entered, and one swapped in for a directory meanwhile is refused by the
    open (then removed as the link it is).  Iterative, with at most
    :data:`DELETE_DEPTH` directories open: a directory deeper than that is first
    renamed into the top directory (inside the tree being deleted) and deleted
    from there, so a tree of any depth goes without exhausting descriptors or the
    stack (``shutil.rmtree`` recurses once per level before Python 3.13).
    Blocking: call it in a worker thread.
    """
    top = os.open(name, _DELETE_FLAGS, dir_fd=dir_fd)
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = []
    try:
        stack.append((top, name, os.scandir(top)))
        moved_up = 0  # subdirectories renamed into the top directory since it was last read
        spare = 0
        while stack:
            fd, _, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _close_listing(entries)
                if len(stack) == 1 and moved_up:  # read the top directory again for what was moved into it
                    moved_up = 0
                    stack[0] = (fd, name, os.scandir(fd))
                    continue
                _, done, _ = stack.pop()
                os.close(fd)
                os.rmdir(done, dir_fd=stack[-1][0] if stack else dir_fd)
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if not is_dir:
                try:
                    os.unlink(entry.name, dir_fd=fd)
                    continue
                except FileNotFoundError:
                    continue
                except IsADirectoryError:  # it became a directory meanwhile
                    pass
            if len(stack) >= DELETE_DEPTH:
                while True:
                    spare += 1
                    try:
                        rename_noreplace(fd, entry.name, top, f".radical-delete-{spare}")
                        break
                    except FileExistsError:
                        continue
                moved_up += 1
                continue
            try:
                child = os.open(entry.name, _DELETE_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(entry.name, dir_fd=fd)  # a symlink or a file swapped in: removed, not entered
                continue
            try:
                stack.append((child, entry.name, os.scandir(child)))
            except BaseException:
                os.close(child)
                raise
    finally:
        for fd, _, entries in stack:
            _close_listing(entries)
            os.close(fd)


def _close_listing(entries: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(entries, "close", None)
    if close is not None:
        close()


# ---------------------------------------------------------------- renaming without replacing

_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 (or not Linux): the fallback below
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``), atomically where possible.

    ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it;
    else a hard link plus unlink for anything but a directory (atomic too);
    else (a directory on such a file system) a check then a rename, which a
    concurrent creator of ``dst`` could race.
    """
    if _renameat2 is not None:
        if _renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    info = os.stat(src, dir_fd=src_dir, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
        else:
            os.unlink(src, dir_fd=src_dir)
            return
    try:
        os.stat(dst, dir_fd=dst_dir, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


__all__ = [
    "DELETE_DEPTH",
    "NAME_MAX",
    "PATH_MAX",
    "PathRefused",
    "Root",
    "Roots",
    "Target",
    "entry_fields",
    "file_type",
    "fsync_dir",
    "printable",
    "refusal",
    "remove_tree",
    "rename_noreplace",
]
