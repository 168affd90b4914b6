"""The staging plugin's confinement (``plugins/staging/_paths.py``) and transfer pieces, without a network.

Every escape form is refused: ``..`` out of a root, an absolute path outside the roots, a symlink out
(as the last component or in the middle, even one that points back inside), a directory swapped for a
symlink before the request; and a swap *during* a request cannot redirect it, because the walk holds
the directory it opened (shown by swapping between the walk and the write).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from radical_edge_plugins.staging import StagingPlugin, _paths, default_roots
from radical_edge_plugins.staging._paths import PathRefused, Roots, rename_noreplace
from radical_edge_plugins.staging._transfer import (
    ChecksumCache,
    FileStream,
    Locks,
    RangeNotSatisfiable,
    Upload,
    parse_range,
    partial_name,
)

from radical_edge_edge._cli import STAGING_ROOTS_ENV, build_parser


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``root`` (a staging root) holding ``d/f`` and symlinks; ``outside`` with a secret; ``home`` a second root."""
    root, outside, home = tmp_path / "root", tmp_path / "outside", tmp_path / "home"
    for d in (root / "d", outside, home):
        d.mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"inside")
    (outside / "secret").write_bytes(b"secret")
    (root / "out").symlink_to(outside)  # a symlink leaving the root
    (root / "back").symlink_to(root / "d")  # a symlink that stays inside: refused all the same
    (root / "secret-link").symlink_to(outside / "secret")
    return {"root": root, "outside": outside, "home": home}


def refused(roots: Roots, path: str, *, create: bool = False) -> PathRefused:
    with pytest.raises(PathRefused) as info:
        roots.resolve(path, create_parents=create).close()
    return info.value


def test_paths_map_into_the_roots(tree: dict[str, Path]) -> None:
    roots = Roots([tree["root"], tree["home"]], home=str(tree["home"]))
    root = str(tree["root"])
    with roots.resolve(f"{root}/d/f") as t:
        assert (t.path, t.name) == (f"{root}/d/f", "f")
        assert t.describe()["type"] == "file"
    with roots.resolve("d/f") as t:  # relative: to the first root
        assert t.path == f"{root}/d/f"
    with roots.resolve("~/x") as t:
        assert t.path == f"{tree['home']}/x"
    with roots.resolve("~") as t:
        assert t.is_root
        assert t.describe()["type"] == "dir"
    with roots.resolve(f"{root}/d/../d/./f") as t:  # '..' that stays inside is folded
        assert t.path == f"{root}/d/f"
    assert refused(roots, "~bob/x").status == 400
    assert refused(roots, "").status == 400
    assert refused(roots, "a\x00b").status == 400
    assert refused(roots, f"{root}/nope/f").status == 404
    assert refused(roots, f"{root}/d/f/g").status == 400  # a file in the middle


def test_every_escape_form_is_403(tree: dict[str, Path]) -> None:
    roots = Roots([tree["root"]])
    root = str(tree["root"])
    forms = [
        f"{root}/../outside/secret",  # '..' out of the root
        f"{root}/d/../../outside/secret",
        "/etc/passwd",  # absolute, outside every root
        f"{tree['outside']}/secret",
        f"{root}/out/secret",  # a symlink leading out, in the middle
        f"{root}/back/f",  # a symlink in the middle, even one that points back inside
    ]
    for form in forms:
        exc = refused(roots, form)
        assert (exc.status, exc.escape) == (403, True), form
    exc = refused(roots, f"{root}/out/new/dir", create=True)  # making parents never goes through one either
    assert exc.status == 403
    assert not (tree["outside"] / "new").exists()
    # the last component a symlink: the walk finds its parent, but nothing reads or lists through it
    with roots.resolve(f"{root}/secret-link") as t:
        assert t.describe()["type"] == "symlink"
        with pytest.raises(PathRefused) as info:
            t.open_file()
        assert info.value.status == 403
    with roots.resolve(f"{root}/out") as t, pytest.raises(PathRefused) as info:
        t.listdir(100)
    assert info.value.status == 403
    # the root's own path spelled through a symlink (e.g. $HOME on a symlinked /home) is an alias of it
    alias = tree["outside"].parent / "alias"
    alias.symlink_to(tree["root"])
    aliased = Roots([alias])
    with aliased.resolve(f"{alias}/d/f") as t:
        assert t.path == f"{root}/d/f"


def test_a_directory_swapped_for_a_symlink_before_the_request_is_refused(tree: dict[str, Path]) -> None:
    roots = Roots([tree["root"]])
    d = tree["root"] / "d"
    d.rename(tree["root"] / "d-old")
    d.symlink_to(tree["outside"])
    assert refused(roots, f"{d}/secret").status == 403


def test_a_swap_during_the_request_cannot_redirect_it(tree: dict[str, Path]) -> None:
    """The walk holds the directory it opened: swapping it for a symlink afterwards changes nothing."""
    roots = Roots([tree["root"]])
    d = tree["root"] / "d"
    locks, cache = Locks(), ChecksumCache()
    with roots.resolve(f"{d}/new.bin") as target:
        # between the check and the write, someone replaces d with a symlink to the outside
        d.rename(tree["root"] / "d-moved")
        d.symlink_to(tree["outside"])
        upload = Upload(target, locks, cache, offset=0, size=4)
        upload.open()
        try:
            upload.write([b"data"])
            assert upload.finish_hash() == hashlib.sha256(b"data").hexdigest()
            upload.commit(overwrite=False)
        finally:
            upload.close()
    assert (tree["root"] / "d-moved" / "new.bin").read_bytes() == b"data"  # where the walk was
    assert not (tree["outside"] / "new.bin").exists()
    assert sorted(p.name for p in tree["outside"].iterdir()) == ["secret"]


def test_partial_files_that_are_links_are_refused(tree: dict[str, Path]) -> None:
    roots = Roots([tree["root"]])
    d = tree["root"] / "d"
    (d / partial_name("a")).symlink_to(tree["outside"] / "secret")
    os.link(tree["outside"] / "secret", d / partial_name("b"))  # a hard link to a file outside
    for name in ("a", "b"):
        with roots.resolve(f"{d}/{name}") as target:
            upload = Upload(target, Locks(), ChecksumCache(), offset=0, size=None)
            with pytest.raises(PathRefused) as info:
                upload.open()
            assert info.value.status == 403
            assert upload.fd == -1
    assert (tree["outside"] / "secret").read_bytes() == b"secret"  # not truncated through the link


def test_uploads_lock_resume_and_never_replace(tree: dict[str, Path]) -> None:
    roots = Roots([tree["root"]])
    locks, cache = Locks(), ChecksumCache()
    data = os.urandom(3 * 1024 * 1024 + 17)
    with roots.resolve(f"{tree['root']}/up.bin") as target:
        first = Upload(target, locks, cache, offset=0, size=len(data))
        first.open()
        with pytest.raises(PathRefused) as info:  # a second writer of the same partial file
            Upload(target, locks, cache, offset=0, size=len(data)).open()
        assert info.value.status == 409
        first.write([data[:1000], data[1000:2_000_000]])
        first.keep()
        first.close()
        assert (tree["root"] / partial_name("up.bin")).stat().st_mode & 0o777 == 0o600
        assert not (tree["root"] / "up.bin").exists()
        with pytest.raises(PathRefused) as info:  # a resume must continue where the partial file ends
            Upload(target, locks, cache, offset=5, size=len(data)).open()
        assert info.value.status == 409
        assert "resume at offset 2000000" in info.value.detail
        resumed = Upload(target, locks, cache, offset=2_000_000, size=len(data))
        resumed.open()
        for i in range(2_000_000, len(data), 300_000):
            resumed.write([data[i : i + 300_000]])
        assert resumed.finish_hash() == hashlib.sha256(data).hexdigest()  # the earlier bytes hashed from disk
        (tree["root"] / "up.bin").write_bytes(b"someone else's")
        with pytest.raises(PathRefused) as info:
            resumed.commit(overwrite=False)
        assert info.value.status == 409
        assert (tree["root"] / "up.bin").read_bytes() == b"someone else's"
        resumed.commit(overwrite=True)
        resumed.close()
    assert (tree["root"] / "up.bin").read_bytes() == data
    assert not (tree["root"] / partial_name("up.bin")).exists()


@pytest.mark.parametrize("with_renameat2", [True, False])
def test_rename_noreplace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_renameat2: bool) -> None:
    if not with_renameat2:  # an old C library or kernel: hard link + unlink, or check + rename for a directory
        monkeypatch.setattr(_paths, "_renameat2", None)
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            rename_noreplace(fd, "a", fd, "b")
        with pytest.raises(FileExistsError):
            rename_noreplace(fd, "d", fd, "e")
        rename_noreplace(fd, "a", fd, "c")
        rename_noreplace(fd, "d", fd, "f")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c", "e", "f"]
    assert (tmp_path / "c").read_text() == "a"


def test_long_names_get_a_short_partial_name() -> None:
    assert partial_name("x.bin") == ".x.bin.radical-partial"
    long = "n" * 250
    assert len(partial_name(long)) <= 255
    assert partial_name(long) == partial_name(long)  # deterministic, so a resume finds it


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 4)),
        ("bytes=5-", 10, (5, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=8-100", 10, (8, 10)),
        ("bytes=0-1,4-5", 10, None),  # several ranges: ignored (the whole file)
        ("items=0-1", 10, None),
        ("bytes=5-2", 10, None),
        ("bytes=10-", 10, RangeNotSatisfiable),
        ("bytes=-0", 10, RangeNotSatisfiable),
        ("bytes=0-", 0, RangeNotSatisfiable),
        # numbers past int()'s 4300 digits (a ValueError: 500) within the 64 KiB header block
        ("bytes=" + "9" * 5000 + "-", 10, RangeNotSatisfiable),
        ("bytes=0-" + "9" * 5000, 10, (0, 10)),
        ("bytes=-" + "9" * 5000, 10, (0, 10)),
        ("bytes=" + "0" * 5000 + "5-", 10, (5, 10)),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    if expected is RangeNotSatisfiable:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == expected


def test_roots_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_roots({"SCRATCH": "/scratch/u"}) == ["~", "/scratch/u", "/tmp"]
    assert default_roots({}) == ["~", "/tmp"]
    assert default_roots({STAGING_ROOTS_ENV: f"/a{os.pathsep}/b"}) == ["/a", "/b"]
    args = build_parser().parse_args(["--staging-root", "/a", "--staging-root", "/b"])
    assert args.staging_root == ["/a", "/b"]
    monkeypatch.setenv(STAGING_ROOTS_ENV, f"{tmp_path}{os.pathsep}{tmp_path / 'missing'}")
    plugin = StagingPlugin()
    assert [r.path for r in plugin.roots] == [str(tmp_path)]  # the missing one is left out
    with pytest.raises(ValueError, match="none of the staging roots"):
        StagingPlugin(roots=[tmp_path / "missing"])


# ---------------------------------------------------------------- the hostile review: each test is one attack


def plugin_for(tree: dict[str, Path]) -> StagingPlugin:
    return StagingPlugin(roots=[tree["root"]], home=str(tree["root"]))


def test_a_partial_file_someone_else_owns_is_never_written_or_committed(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a shared root (``/tmp``) another user can plant ``.NAME.radical-partial``: an upload must not write
    the caller's data into that user's file, nor ``commit`` put that user's file in place."""
    root = tree["root"]
    planted = root / partial_name("x")
    planted.write_bytes(b"theirs")
    planted.chmod(0o666)
    mine = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: mine + 1)  # the planted file now belongs to someone else
    plugin = plugin_for(tree)
    with plugin.roots.resolve(f"{root}/x") as target:
        for offset in (0, 6):
            upload = Upload(target, plugin.locks, plugin.cache, offset=offset, size=None)
            with pytest.raises(PathRefused) as info:
                upload.open()
            assert info.value.status == 403
            assert upload.fd == -1
    with pytest.raises(PathRefused) as info:
        plugin._commit(f"{root}/x", None, False)
    assert info.value.status == 403
    assert planted.read_bytes() == b"theirs"  # neither truncated nor written
    assert not (root / "x").exists()
    # a partial file the upload makes itself is its own, whatever owner the file system reports for it
    # (an NFS mount whose id mapping fails shows every file as nobody's)
    assert plugin._put_whole(f"{root}/y", b"mine", False)["size"] == 4
    assert (root / "y").read_bytes() == b"mine"


def test_committing_a_fifo_under_the_partial_name_does_not_hang(tree: dict[str, Path]) -> None:
    root = tree["root"]
    fifo = root / partial_name("x")
    os.mkfifo(fifo)
    plugin = plugin_for(tree)
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(plugin._commit, f"{root}/x", None, False)))
    worker.start()
    worker.join(3)
    if worker.is_alive():  # blocked in open(): let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(3)
        pytest.fail("commit blocked opening a FIFO planted under the partial name")
    assert isinstance(outcome[0], PathRefused)
    assert outcome[0].status == 403


def _catch(func: Any, *args: Any) -> object:
    try:
        return func(*args)
    except PathRefused as exc:
        return exc


def test_the_partial_file_of_a_running_upload_cannot_be_swapped(tree: dict[str, Path]) -> None:
    """Another caller moving a file onto (or deleting, or uploading to) the partial file of a running upload
    would make the upload put *that* file in place while it answers with the hash of its own bytes."""
    root = tree["root"]
    plugin = plugin_for(tree)
    (root / "evil").write_bytes(b"evil")
    partial = partial_name("x")
    with plugin.roots.resolve(f"{root}/x") as target:
        upload = Upload(target, plugin.locks, plugin.cache, offset=0, size=None)
        upload.open()
        try:
            upload.write([b"good"])
            for attempt in (
                lambda: plugin._move(f"{root}/evil", f"{root}/{partial}", True),
                lambda: plugin._move(f"{root}/{partial}", f"{root}/elsewhere", False),
                lambda: plugin._delete(f"{root}/{partial}", False),
                lambda: plugin._start_upload(f"{root}/{partial}", 0, None, True, False),
            ):
                with pytest.raises(PathRefused) as info:
                    attempt()
                assert info.value.status == 409
                assert "in progress" in info.value.detail
            # swapped behind the edge's back (a local process): the commit notices, before and after the rename
            os.replace(root / "evil", root / partial)
            digest = upload.finish_hash()
            with pytest.raises(PathRefused) as info:
                upload.commit(overwrite=False)
            assert info.value.status == 409
        finally:
            upload.close()
    assert digest == hashlib.sha256(b"good").hexdigest()
    assert not (root / "x").exists()  # the planted file was not put in place under the upload's name
    assert (root / partial).read_bytes() == b"evil"


def test_no_name_shares_its_partial_file_with_another() -> None:
    """A long name's partial file is named by a hash; a name that *is* such a hash must not get the same one
    (it would share the long name's partial file: resume into it, commit it)."""
    long = "n" * 250
    hashed = hashlib.sha256(long.encode()).hexdigest()[:40]
    assert partial_name(hashed) != partial_name(long)
    assert partial_name(hashed) == partial_name(hashed)
    assert len(partial_name(hashed).encode()) <= 255


def test_paths_are_never_logged_raw(tree: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    root = tree["root"]
    plugin = plugin_for(tree)
    caplog.set_level(logging.DEBUG, "radical_edge.plugins.staging")
    forged = "x\nWARNING forged"
    plugin._put_whole(f"{root}/{forged}", b"data", False)
    plugin._move(f"{root}/{forged}", f"{root}/{forged}2", False)
    plugin._delete(f"{root}/{forged}2", False)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert not any("\n" in m for m in messages), messages


def test_paths_that_are_not_unicode_are_refused_and_names_that_are_not_utf8_are_listed(
    tree: dict[str, Path],
) -> None:
    """A JSON body can carry lone surrogates: ``\\ud800`` cannot even be encoded (500), ``\\udcff`` makes a
    name that is not UTF-8, and a listing with such a name in it could not be sent as JSON (500 for every
    listing of that directory, the portal's ``~`` included)."""
    root = tree["root"]
    roots = Roots([root], home=str(root))
    for bad in ("~/\ud800", f"{root}/\udcff", "\udcff/x"):
        assert refused(roots, bad, create=True).status == 400
    assert not [p for p in os.listdir(os.fsencode(root)) if b"\xff" in p]
    (root / os.fsdecode(b"bad-\xff\n")).write_bytes(b"x")  # made by the edge user, not through the API
    plugin = plugin_for(tree)
    listing = plugin._list(str(root))
    json.dumps(listing, ensure_ascii=False).encode("utf-8")  # what the HTTP answer does
    assert "bad-\\xff\n" in [e["name"] for e in listing["entries"]]


def test_a_path_longer_than_path_max_is_refused_before_anything_is_made(tree: dict[str, Path]) -> None:
    root = tree["root"]
    deep = "a/" * 3000 + "f"  # one put would make 3000 nested directories
    try:
        assert refused(Roots([root]), deep, create=True).status == 400
        assert not (root / "a").exists()
    finally:  # (too deep for pytest's clean-up)
        subprocess.run(["rm", "-rf", str(root / "a")], check=False)


def test_a_recursive_delete_walks_any_depth_by_descriptor(tree: dict[str, Path]) -> None:
    """Python 3.11's ``shutil.rmtree`` recurses once per level (RecursionError past ~1000: a 500 after
    deleting part of the tree); the delete holds a bounded number of descriptors at any depth and never
    follows a symlink or blocks on a FIFO inside the tree."""
    root = tree["root"]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1200):  # deeper than any path can be written (PATH_MAX)
            os.mkdir("deep", dir_fd=fd)
            nxt = os.open("deep", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.symlink(str(tree["outside"]), "out", dir_fd=fd)
        os.mkfifo("fifo", dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as fh:
            fh.write(b"x")
    finally:
        os.close(fd)
    plugin = plugin_for(tree)
    before = len(os.listdir("/proc/self/fd"))
    try:
        assert plugin._delete(f"{root}/deep", True) == {"path": f"{root}/deep", "removed": "dir"}
    finally:  # (pytest's own clean-up of old temporary directories is shutil.rmtree: it cannot remove this tree)
        subprocess.run(["rm", "-rf", str(root / "deep")], check=False)
    assert not (root / "deep").exists()
    assert len(os.listdir("/proc/self/fd")) == before
    assert (tree["outside"] / "secret").read_bytes() == b"secret"


@pytest.mark.anyio
async def test_hashing_takes_a_few_worker_threads_at_most(tree: dict[str, Path]) -> None:
    """Every checksum of a different large file would otherwise hold one of the edge's 40 worker threads
    for as long as it hashes: a caller asking for 40 of them would stall every plugin's file work."""
    plugin = plugin_for(tree)
    running, most = 0, 0
    lock = threading.Lock()

    def slow_digest(fd: int, info: os.stat_result) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return "0" * 64

    plugin.cache.digest = slow_digest  # type: ignore[method-assign]
    infos = []
    for i in range(8):
        (tree["root"] / f"h{i}").write_bytes(b"x" * i)
        infos.append(os.stat(tree["root"] / f"h{i}"))
    async with anyio.create_task_group() as tg:
        for info in infos:
            tg.start_soon(plugin._digest, -1, info)
    assert 1 <= most <= 2


def test_a_partial_file_stays_private_when_its_commit_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    plugin = plugin_for(tree)
    umask = os.umask(0o022)
    try:
        with plugin.roots.resolve(f"{root}/x") as target:
            upload = Upload(target, plugin.locks, plugin.cache, offset=0, size=None)
            upload.open()
            try:
                upload.write([b"private"])
                upload.finish_hash()
                (root / "x").write_bytes(b"someone else's")
                with pytest.raises(PathRefused):
                    upload.commit(overwrite=False)  # 409: kept for a later commit
            finally:
                upload.close()
    finally:
        os.umask(umask)
    assert stat.S_IMODE((root / partial_name("x")).stat().st_mode) == 0o600


async def _send_file(
    path: Path, cache: ChecksumCache, *, span: tuple[int, int] | None = None, change_after_first: bool = False
) -> bytes:
    """A FileStream of ``path`` (all of it, or ``span``: start and length) with ``remember``, in pieces of 1,000
    bytes; what it sent.  ``change_after_first``: the file is appended to once the first piece went out."""
    fd = os.open(path, os.O_RDONLY)
    info = os.fstat(fd)
    start, length = span or (0, info.st_size)
    response = FileStream(
        fd, start, length, status_code=200, headers={}, head_only=False, chunk=1000, remember=(cache, info)
    )
    body: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message["body"])
            if change_after_first and len(body) == 1:
                with open(path, "ab") as fh:
                    fh.write(b"more")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, receive, send)
    return b"".join(body)


@pytest.mark.anyio
async def test_a_file_sent_whole_with_remember_leaves_its_digest_in_the_cache(tmp_path: Path) -> None:
    data = os.urandom(20_500)
    for name, span in (("whole", None), ("from 1", (1, 20_499)), ("up to the last byte", (0, 20_499))):
        path = tmp_path / name
        path.write_bytes(data)
        cache = ChecksumCache(settle=0)
        sent = await _send_file(path, cache, span=span)
        if span is None:
            assert sent == data
            assert cache.get(os.stat(path)) == hashlib.sha256(data).hexdigest()
        else:  # part of the file: nothing remembered
            assert sent == data[span[0] : span[0] + span[1]]
            assert cache.get(os.stat(path)) is None
    # the file changed while it was read: its digest is not put under the version it had when opened
    path = tmp_path / "changed"
    path.write_bytes(data)
    opened = os.stat(path)
    cache = ChecksumCache(settle=0)
    assert await _send_file(path, cache, change_after_first=True) == data
    assert cache.get(opened) is None
    assert cache.get(os.stat(path)) is None


@pytest.mark.anyio
async def test_a_digest_read_from_a_file_changed_just_before_is_not_kept(tmp_path: Path) -> None:
    """A write right after another may leave a file's timestamps as they were (whole seconds on some file
    systems): a digest read from a file that changed less than ``settle`` seconds before is used, not cached."""
    data = os.urandom(5000)
    path = tmp_path / "f"
    path.write_bytes(data)
    cache = ChecksumCache(settle=0.3)
    assert await _send_file(path, cache) == data
    assert cache.get(os.stat(path)) is None
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        assert cache.digest(fd, info) == hashlib.sha256(data).hexdigest()  # answered all the same
        assert cache.get(info) is None
        time.sleep(0.35)  # settled now
        assert cache.digest(fd, info) == hashlib.sha256(data).hexdigest()
        assert cache.get(info) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
    path.write_bytes(data[::-1])
    time.sleep(0.35)
    assert await _send_file(path, cache) == data[::-1]
    assert cache.get(os.stat(path)) == hashlib.sha256(data[::-1]).hexdigest()


@pytest.mark.anyio
async def test_who_asks_for_a_checksum_while_it_is_computed_gets_that_result_even_if_it_is_not_cached(
    tree: dict[str, Path],
) -> None:
    """A file changed just before its checksum is computed is not cached; whoever asked meanwhile (a caller whose
    first request timed out, asking again) still gets the result, not a computation of its own."""
    plugin = plugin_for(tree)
    calls = 0

    def slow_uncached_digest(fd: int, info: os.stat_result) -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        return "1" * 64

    plugin.cache.digest = slow_uncached_digest  # type: ignore[method-assign]
    (tree["root"] / "h").write_bytes(b"x")
    info = os.stat(tree["root"] / "h")
    results: list[str] = []

    async def ask() -> None:
        results.append(await plugin._digest(-1, info))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(ask)
            await anyio.sleep(0.02)
    assert results == ["1" * 64] * 3
    assert calls == 1
