"""The staging plugin's confinement (``plugins/staging/_paths.py``) and transfer pieces, without a network.

Every escape form is refused: ``..`` out of a root, an absolute path outside the roots, a symlink out
(as the last component or in the middle, even one that points back inside), a directory swapped for a
symlink before the request; and a swap *during* a request cannot redirect it, because the walk holds
the directory it opened (shown by swapping between the walk and the write).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from radical_edge_plugins.staging import StagingPlugin, _paths, default_roots
from radical_edge_plugins.staging._paths import PathRefused, Roots, rename_noreplace
from radical_edge_plugins.staging._transfer import (
    ChecksumCache,
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
