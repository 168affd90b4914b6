"""The staging plugin end to end: a bridge over TLS and real edges in this process, the SDK and plain HTTP.

No mocks: files land on disk under temporary staging roots; the SDK talks to the bridge through its
tunnel; ``httpx`` checks the HTTP surface (ranges, headers) through the bridge's own HTTP server.
The 1 GiB transfer with the processes' memory measured is in ``test_staging_big.py``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import logging
import os
import ssl
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from radical_edge_plugins.staging import StagingPlugin
from radical_edge_plugins.staging._transfer import ChecksumCache

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_client import (
    AsyncBridgeClient,
    AsyncStagingClient,
    AuthError,
    BridgeClient,
    ChecksumMismatch,
    HTTPError,
    NotFound,
    RadicalEdgeError,
    RequestTimeout,
    StagingClient,
)
from radical_edge_edge import Backoff as EdgeBackoff
from radical_edge_edge import EdgeService, PluginHost

from .client_helpers import FAST, TOKEN, CuttableProxy, TLSFiles, tls

pytestmark = pytest.mark.anyio
__all__ = ["tls"]  # the fixture, imported for pytest

MiB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every MiB (misplaced chunks are noticed), made fast."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += i.to_bytes(8, "big") + block[8:]
        i += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    """A bridge with edges ``e1`` (roots ``r1``, ``r2``; ``~`` is ``r1``) and ``e2`` (root ``e2root``)."""

    tls: TLSFiles
    url: str
    bridge: Bridge
    plugins: dict[str, StagingPlugin]
    r1: Path
    r2: Path
    e2root: Path
    outside: Path
    services: list[EdgeService] = field(default_factory=list)

    def client(self, **options: Any) -> AsyncBridgeClient:
        options.setdefault("token", TOKEN)
        options.setdefault("cert", self.tls.ca)
        options.setdefault("backoff", FAST)
        options.setdefault("timeout", 20)
        return AsyncBridgeClient(options.pop("url", self.url), **options)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.tls.ca)),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=20,
        )


@contextlib.asynccontextmanager
async def site(tmp_path: Path, tls: TLSFiles, **plugin_options: Any) -> AsyncIterator[Site]:
    r1, r2, e2root, outside = (tmp_path / n for n in ("r1", "r2", "e2root", "outside"))
    for d in (r1, r2, e2root, outside):
        d.mkdir()
    config = BridgeConfig(port=0, cert=tls.cert, key=tls.key, token=TOKEN, request_timeout=20)
    plugins = {
        "e1": StagingPlugin(roots=[r1, r2], home=str(r1), **plugin_options),
        "e2": StagingPlugin(roots=[e2root], home=str(e2root), **plugin_options),
    }
    async with anyio.create_task_group() as tg:
        bridge = Bridge(config)
        await tg.start(bridge.serve)
        url = f"https://127.0.0.1:{bridge.port}"
        s = Site(tls, url, bridge, plugins, r1, r2, e2root, outside)
        for name, plugin in plugins.items():
            host = PluginHost(name)
            await host.add_plugin(plugin)
            service = EdgeService(
                name, url=url, host=host, plugins=None, token=TOKEN, ca_file=tls.ca, backoff=EdgeBackoff(0.05, 0.2)
            )
            s.services.append(service)
            tg.start_soon(service.run)
            with anyio.fail_after(10):
                await service.wait_connected()
        try:
            yield s
        finally:
            for service in s.services:
                service.stop()
            with anyio.move_on_after(5):
                for service in s.services:
                    while service.state != "stopped":
                        await anyio.sleep(0.01)
            bridge.stop()
            tg.cancel_scope.cancel()


async def staging(bridge: AsyncBridgeClient, edge: str = "e1", **session: Any) -> AsyncStagingClient:
    plugin = await (await bridge.get_edge_client(edge)).get_plugin("staging", **session)
    assert isinstance(plugin, AsyncStagingClient)
    return plugin


async def slow_chunks(data: bytes, pieces: int, pause: float) -> AsyncIterator[bytes]:
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        yield data[i : i + step]
        await anyio.sleep(pause)


# ---------------------------------------------------------------- radical.edge's routes


async def test_parity_put_get_list(tmp_path: Path, tls: TLSFiles, caplog: pytest.LogCaptureFixture) -> None:
    async with site(tmp_path, tls, compat_max_bytes=64 * 1024) as s, s.client() as bridge:
        st = await staging(bridge)
        r1 = s.r1
        assert await st.put(f"{r1}/a/b.txt", b"hello") == {"path": f"{r1}/a/b.txt", "size": 5, "sha256": sha(b"hello")}
        assert (r1 / "a" / "b.txt").read_bytes() == b"hello"  # parent directories made, as upstream did
        # an empty file (radical.edge could not put one)
        assert (await st.put("~/empty", b""))["size"] == 0
        assert (r1 / "empty").read_bytes() == b""
        assert await st.get("~/empty") == b""
        # no overwrite unless asked
        with pytest.raises(HTTPError) as info:
            await st.put(f"{r1}/a/b.txt", b"other")
        assert info.value.status == 409
        assert (await st.put(f"{r1}/a/b.txt", "other", overwrite=True))["size"] == 5
        assert await st.get(f"{r1}/a/b.txt") == b"other"
        # outside the roots: 403, logged with the path repr'd
        caplog.set_level(logging.WARNING, "radical_edge.plugins.staging")
        with pytest.raises(AuthError) as denied:
            await st.put(f"{s.outside}/x\nforged log line", b"x")
        assert denied.value.status == 403
        assert not list(s.outside.iterdir())
        assert any("x\\nforged log line" in r.getMessage() for r in caplog.records)
        assert not any("x\nforged" in r.getMessage() for r in caplog.records)
        # list: upstream's shape plus mtime and mode; a symlink is a symlink, never followed
        (r1 / "link").symlink_to(s.outside)
        listing = await st.list("~")
        assert listing["path"] == str(r1)
        by_name = {e["name"]: e for e in listing["entries"]}
        assert sorted(by_name) == ["a", "empty", "link"]
        assert by_name["a"]["type"] == "dir"
        assert by_name["a"]["size"] is None
        assert by_name["empty"] == {**by_name["empty"], "type": "file", "size": 0}
        assert by_name["link"]["type"] == "symlink"
        assert (await st.listdir("~"))["entries"] == listing["entries"]
        with pytest.raises(NotFound):
            await st.get("~/missing")
        with pytest.raises(NotFound):
            await st.download("~/missing", tmp_path / "missing")
        assert not list(tmp_path.glob("*missing*"))  # no empty partial file left behind
        # over the limit: 413 naming the streaming route and the SDK method, both ways
        big = os.urandom(64 * 1024 + 1)
        with pytest.raises(HTTPError) as info:
            await st.put("~/big", big)
        assert info.value.status == 413
        assert "PUT upload/{sid}" in str(info.value.detail)
        assert "StagingClient.upload" in str(info.value.detail)
        (r1 / "big").write_bytes(big)
        with pytest.raises(HTTPError) as info:
            await st.get("~/big")
        assert info.value.status == 413
        assert "GET file/{sid}" in str(info.value.detail)
        assert "download" in str(info.value.detail)
        # a body far past the limit is refused from its declared length, before it is read
        huge = {"filename": "~/huge", "content": base64.b64encode(os.urandom(200_000)).decode()}
        with pytest.raises(HTTPError) as info:
            await st.post_json(st.session_path("put"), json=huge)
        assert info.value.status == 413
        assert not (r1 / "huge").exists()
        local = tmp_path / "local.txt"
        local.write_bytes(b"from a local file")
        assert (await st.put_file(local, "~/pf.txt"))["size"] == 17
        assert (await st.roots()) == {"roots": [str(s.r1), str(s.r2)], "home": str(s.r1)}
        # every route in the edge's OpenAPI document, one operation per method
        paths = (await (await bridge.get_edge_client("e1")).openapi())["paths"]
        assert sorted(paths["/staging/file/{sid}"]) == ["get", "head"]
        assert sorted(paths["/staging/upload/{sid}"]) == ["delete", "get", "put"]
        assert sorted(paths["/staging/delete/{sid}"]) == ["delete", "post"]


# ---------------------------------------------------------------- streamed transfers


async def test_upload_and_download_any_source_with_checksums(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(5 * MiB + 123)
    local = tmp_path / "src.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s, s.client() as bridge:
        s.plugins[
            "e1"
        ].cache.settle_ns = 0  # files are written here just before they are hashed (see test_staging_paths)
        st = await staging(bridge)
        seen: list[tuple[int, int | None]] = []
        answer = await st.upload(local, "~/in/src.bin", progress=lambda done, total: seen.append((done, total)))
        assert answer == {"path": f"{s.r1}/in/src.bin", "size": len(data), "sha256": sha(data)}
        assert (s.r1 / "in" / "src.bin").read_bytes() == data
        # private while it arrived; in place it has the mode any new file of the edge's user gets
        umask = os.umask(0o022)
        os.umask(umask)
        assert stat.S_IMODE((s.r1 / "in" / "src.bin").stat().st_mode) == 0o666 & ~umask
        assert seen[0] == (0, len(data))
        assert seen[-1] == (len(data), len(data))
        assert not [p for p in (s.r1 / "in").iterdir() if p.name.endswith(".radical-partial")]
        # the other sources: bytes, a file object, an async iterator, an iterator (size unknown)
        assert (await st.upload(data[:1000], "~/bytes.bin"))["sha256"] == sha(data[:1000])
        with local.open("rb") as fh:
            assert (await st.upload(fh, "~/fh.bin"))["size"] == len(data)
        assert (await st.upload(slow_chunks(data, 7, 0), "~/aiter.bin"))["sha256"] == sha(data)
        sizes: list[int | None] = []
        chunks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
        await st.upload(chunks, "~/iter.bin", progress=lambda done, total: sizes.append(total))
        assert set(sizes) == {None}
        for name in ("fh.bin", "aiter.bin", "iter.bin"):
            assert (s.r1 / name).read_bytes() == data, name
        # the checksum is known from the upload: the download carries it, and checks it
        got = await st.download("~/in/src.bin", tmp_path / "back.bin")
        assert got == {"path": str(tmp_path / "back.bin"), "size": len(data), "sha256": sha(data)}
        assert (tmp_path / "back.bin").read_bytes() == data
        assert not (tmp_path / ".back.bin.radical-partial").exists()
        (tmp_path / "into").mkdir()
        assert (await st.download("~/in/src.bin", tmp_path / "into"))["path"] == str(tmp_path / "into" / "src.bin")
        with pytest.raises(FileExistsError):
            await st.download("~/in/src.bin", tmp_path / "back.bin")
        await st.download("~/bytes.bin", tmp_path / "back.bin", overwrite=True)
        assert (tmp_path / "back.bin").read_bytes() == data[:1000]
        # into file objects, sync and async
        sink = io.BytesIO()
        assert (await st.download("~/in/src.bin", sink))["sha256"] == sha(data)
        assert sink.getvalue() == data

        class AsyncSink:
            def __init__(self) -> None:
                self.parts: list[bytes] = []

            async def write(self, chunk: bytes) -> None:
                self.parts.append(chunk)

        async_sink = AsyncSink()
        await st.download("~/in/src.bin", async_sink)
        assert b"".join(async_sink.parts) == data
        # a file the edge has no checksum for yet (written behind its back): asked for after the transfer
        (s.r2 / "plain.bin").write_bytes(data)
        assert "sha256" not in await st.stat(f"{s.r2}/plain.bin")
        assert (await st.download(f"{s.r2}/plain.bin", io.BytesIO()))["sha256"] == sha(data)
        assert (await st.stat(f"{s.r2}/plain.bin"))["sha256"] == sha(data)  # now cached
        assert await st.checksum("~/in/src.bin") == sha(data)
        # verification can be switched off (no hashing at all on the client)
        assert (await st.upload(data, "~/nv.bin", verify=False))["size"] == len(data)
        assert (await st.download("~/nv.bin", io.BytesIO(), verify=False))["sha256"] is None

        # the plain HTTP surface: Content-Length, the digest headers, HEAD
        async with s.http() as http:
            r = await http.get(f"/e1/staging/file/{st.sid}", params={"path": "~/in/src.bin"})
            assert r.status_code == 200
            assert r.content == data
            assert r.headers["content-length"] == str(len(data))
            assert r.headers["accept-ranges"] == "bytes"
            assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''src.bin"
            assert r.headers["x-checksum-sha256"] == sha(data)
            assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"
            head = await http.head(f"/e1/staging/file/{st.sid}", params={"path": "~/in/src.bin"})
            assert head.status_code == 200
            assert head.headers["content-length"] == str(len(data))
            assert head.content == b""
            (s.r1 / "fresh.bin").write_bytes(b"fresh")
            r = await http.get(
                f"/e1/staging/file/{st.sid}", params={"path": "~/fresh.bin"}, headers={"Want-Repr-Digest": "sha-256=1"}
            )
            assert r.headers["x-checksum-sha256"] == sha(b"fresh")
            # a raw upload with curl's habits: the body as it is, a checksum to check before the rename
            r = await http.put(
                f"/e1/staging/upload/{st.sid}",
                params={"path": "~/raw.bin", "sha256": sha(data[:5000]), "size": 5000},
                content=data[:5000],
            )
            assert r.json() == {"path": f"{s.r1}/raw.bin", "size": 5000, "sha256": sha(data[:5000]), "committed": True}
            r = await http.put(f"/e1/staging/upload/{st.sid}", params={"path": "~/raw.bin"}, content=b"abc")
            assert r.status_code == 409  # the edge refuses too (the SDK asks first)
            assert (s.r1 / "raw.bin").read_bytes() == data[:5000]
            r = await http.put(
                f"/e1/staging/upload/{st.sid}", params={"path": "~/bad.bin", "sha256": "0" * 64}, content=b"abc"
            )
            assert r.status_code == 422
            assert "checksum mismatch" in r.json()["detail"]
            assert not (s.r1 / "bad.bin").exists()
            assert not (s.r1 / ".bad.bin.radical-partial").exists()  # discarded: a resume cannot fix it


async def test_a_verified_download_of_a_file_with_no_known_digest_reads_it_once_on_the_edge(
    tmp_path: Path, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK asks the edge to hash such a file as it sends it (``remember_sha256``), so the checksum it asks for
    afterwards is answered from the cache, not by reading the file a second time (minutes for a large one)."""
    hashed_from_disk: list[int] = []
    real = ChecksumCache.digest

    def counted(self: ChecksumCache, fd: int, info: os.stat_result) -> str:
        if self.get(info) is None:  # not known: read from disk and hashed now
            hashed_from_disk.append(info.st_size)
        return real(self, fd, info)

    monkeypatch.setattr(ChecksumCache, "digest", counted)
    data = pattern(3 * MiB + 7)
    async with site(tmp_path, tls) as s, s.client() as bridge:
        for plugin in s.plugins.values():
            plugin.cache.settle_ns = 0  # files are written here just before they are read (see test_staging_paths)
        st = await staging(bridge)
        (s.r1 / "fresh.bin").write_bytes(data)  # written behind the edge's back: no digest known
        got = await st.download("~/fresh.bin", tmp_path / "back.bin")
        assert got["sha256"] == sha(data)
        assert (tmp_path / "back.bin").read_bytes() == data
        assert hashed_from_disk == []
        (s.r1 / "fresh2.bin").write_bytes(data)  # the same into a file object
        assert (await st.download("~/fresh2.bin", io.BytesIO()))["sha256"] == sha(data)
        assert hashed_from_disk == []
        # an edge-to-edge copy asks the source the same way
        (s.r1 / "src.bin").write_bytes(data[:MiB])
        assert (await st.copy("~/src.bin", await staging(bridge, "e2"), "~/copy.bin"))["sha256"] == sha(data[:MiB])
        assert hashed_from_disk == []
        # unverified, the edge is not asked to hash
        (s.r1 / "plain.bin").write_bytes(data[:1000])
        await st.download("~/plain.bin", io.BytesIO(), verify=False)
        assert "sha256" not in await st.stat("~/plain.bin")
        # the route itself: the digest is remembered for the whole file only
        async with s.http() as http:
            path = f"/e1/staging/file/{st.sid}"
            for part in ("bytes=1-", "bytes=0-99"):
                r = await http.get(
                    path, params={"path": "~/plain.bin", "remember_sha256": "true"}, headers={"range": part}
                )
                assert r.status_code == 206
                assert "sha256" not in await st.stat("~/plain.bin")
            r = await http.get(path, params={"path": "~/plain.bin", "remember_sha256": "true"})
            assert r.content == data[:1000]
            assert "x-checksum-sha256" not in r.headers  # not known when the answer began
            assert (await st.stat("~/plain.bin"))["sha256"] == sha(data[:1000])
        assert hashed_from_disk == []


async def test_the_sdk_reads_and_writes_local_files_while_the_tunnel_moves_data(tmp_path: Path, tls: TLSFiles) -> None:
    """A slow local disk (a parallel file system) does not stop the network: the next chunk of an upload is
    read while the last one is sent, and a download is written in batches while the next batch arrives.

    Shown without timing: the source's second read starts before the first chunk is reported sent (the
    progress callback waits for it), and the sink's first write waits until the download has gone past
    the first batch (1 MiB); without the overlap, each would wait for the other until the test's limit.
    """
    data = pattern(6 * MiB + 7)
    second_read = threading.Event()

    class SlowSource:  # a blocking, non-seekable file object
        def __init__(self) -> None:
            self.at = 0
            self.reads = 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads == 2:
                second_read.set()
            chunk = data[self.at : self.at + n]
            self.at += len(chunk)
            return chunk

    async def upload_progress(done: int, total: int | None) -> None:
        if 0 < done < len(data):  # the first chunk has gone out: the next one must be on its way from the disk
            with anyio.fail_after(10):
                while not second_read.is_set():
                    await anyio.sleep(0.005)

    progressed = threading.Event()

    class SlowSink:  # a blocking file object whose first write lasts until the download is past 1 MiB
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, chunk: bytes) -> int:
            if not self.parts and not progressed.wait(10):
                raise TimeoutError("the download waited for the local write")
            self.parts.append(chunk)
            return len(chunk)

    def download_progress(done: int, total: int | None) -> None:
        if done >= MiB:
            progressed.set()

    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        answer = await st.upload(SlowSource(), "~/slow.bin", progress=upload_progress)
        assert answer["sha256"] == sha(data)
        assert (s.r1 / "slow.bin").read_bytes() == data
        sink = SlowSink()
        answer = await st.download("~/slow.bin", sink, progress=download_progress)
        assert answer["sha256"] == sha(data)
        assert b"".join(sink.parts) == data


async def test_range_requests(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(3 * MiB + 5)
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        (s.r1 / "f.bin").write_bytes(data)
        (s.r1 / "empty").write_bytes(b"")
        url = f"/e1/staging/file/{st.sid}"
        params = {"path": "~/f.bin"}
        size = len(data)
        for header, (start, end) in {
            "bytes=0-99": (0, 100),
            f"bytes={MiB - 10}-{2 * MiB + 10}": (MiB - 10, 2 * MiB + 11),
            f"bytes={size - 7}-": (size - 7, size),
            "bytes=-1000": (size - 1000, size),
            f"bytes=5-{size * 2}": (5, size),
        }.items():
            r = await http.get(url, params=params, headers={"Range": header})
            assert r.status_code == 206, header
            assert r.content == data[start:end], header
            assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
            assert r.headers["content-length"] == str(end - start)
        for header in (f"bytes={size}-", "bytes=-0"):
            r = await http.get(url, params=params, headers={"Range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == f"bytes */{size}"
            assert r.json()["error"] is True
        r = await http.get(url, params={"path": "~/empty"}, headers={"Range": "bytes=0-"})
        assert r.status_code == 416
        # several ranges, or a file that changed since the caller's copy began (If-Range): all of it
        r = await http.get(url, params=params, headers={"Range": "bytes=0-1,5-6"})
        assert (r.status_code, len(r.content)) == (200, size)
        etag = r.headers["etag"]
        r = await http.get(url, params=params, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert (r.status_code, r.content) == (206, data[:10])
        r = await http.get(url, params=params, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert (r.status_code, len(r.content)) == (200, size)
        # the SDK's range download
        got = await st.download("~/f.bin", tmp_path / "part.bin", range=(MiB, 2 * MiB + 3))
        assert got == {"path": "~/f.bin", "start": MiB, "size": MiB + 3}
        assert (tmp_path / "part.bin").read_bytes() == data[MiB : 2 * MiB + 3]
        sink = io.BytesIO()
        await st.download("~/f.bin", sink, range=(size - 10, None))
        assert sink.getvalue() == data[-10:]


async def test_an_upload_killed_halfway_leaves_no_target_and_resumes(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(24 * MiB + 7)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s, anyio.create_task_group() as tg:
        proxy = CuttableProxy(s.bridge.port or 0)
        await tg.start(proxy.serve)
        async with s.client(url=f"https://127.0.0.1:{proxy.port}", timeout=10) as bridge:
            st = await staging(bridge)

            def cut_halfway(done: int, total: int | None) -> None:
                if done >= len(data) // 2 and proxy.up:
                    proxy.cut()  # the client's connection drops in the middle of the body

            with pytest.raises(RadicalEdgeError):
                await st.upload(local, "~/big.bin", progress=cut_halfway)
            assert not (s.r1 / "big.bin").exists()  # no target, and never a partial one
            proxy.restore()
            with anyio.fail_after(10):  # the edge winds the cut upload up (it keeps what arrived)
                while (state := await st.upload_state("~/big.bin"))["active"]:
                    await anyio.sleep(0.02)
            held = state["offset"]
            assert 0 < held < len(data)
            assert (s.r1 / ".big.bin.radical-partial").stat().st_size == held
            seen: list[int] = []
            answer = await st.upload(local, "~/big.bin", progress=lambda done, total: seen.append(done))
            assert seen[0] == held  # only the rest was sent
            assert answer == {"path": f"{s.r1}/big.bin", "size": len(data), "sha256": sha(data)}
            assert (s.r1 / "big.bin").read_bytes() == data
            assert not (s.r1 / ".big.bin.radical-partial").exists()
            assert (await st.upload_state("~/big.bin")) == {
                "path": f"{s.r1}/big.bin",
                "offset": 0,
                "active": False,
                "exists": True,
            }
        tg.cancel_scope.cancel()


async def test_a_cancelled_upload_keeps_what_the_edge_received(tmp_path: Path, tls: TLSFiles) -> None:
    """The client gives up mid-body (Ctrl-C, its own timeout): the edge keeps what arrived for a resume,
    the batch it had not written yet included (here all of it: the batch is larger than what was sent)."""
    data = pattern(3 * MiB)
    hold = threading.Event()

    def source() -> Iterator[bytes]:
        yield data
        hold.wait(20)  # then the client stalls, and is cancelled
        yield b"never sent"

    async with site(tmp_path, tls, batch_bytes=8 * MiB) as s, s.client() as bridge:
        st = await staging(bridge)
        sent = anyio.Event()

        async def progress(done: int, total: int | None) -> None:
            if done >= len(data):
                sent.set()

        try:
            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(functools.partial(st.upload, source(), "~/cut.bin", progress=progress))
                    await sent.wait()
                    await anyio.sleep(1.0)  # the last of it crosses the bridge to the edge
                    tg.cancel_scope.cancel()
        finally:
            hold.set()
        with anyio.fail_after(10):
            while (state := await st.upload_state("~/cut.bin"))["active"]:
                await anyio.sleep(0.02)
        assert 0 < state["offset"] <= len(data)  # nothing was written before the cut: it is the kept batch
        assert (s.r1 / ".cut.bin.radical-partial").read_bytes() == data[: state["offset"]]


async def test_a_stalled_upload_source_does_not_hold_up_a_cancel_or_the_timeout(tmp_path: Path, tls: TLSFiles) -> None:
    """A source that blocks for good (a pipe whose writer hung): the caller's cancel and the SDK's silence
    timeout still end the upload when they are due, not when the read returns."""
    release = threading.Event()

    def source() -> Iterator[bytes]:
        yield b"s" * MiB
        release.wait(30)
        yield b"late"

    try:
        async with site(tmp_path, tls) as s, s.client(timeout=2) as bridge:
            st = await staging(bridge)
            started = time.monotonic()
            with anyio.move_on_after(1) as scope:
                await st.upload(source(), "~/stall1.bin")
            assert scope.cancelled_caught
            assert time.monotonic() - started < 10
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                await st.upload(source(), "~/stall2.bin")
            assert time.monotonic() - started < 10
    finally:
        release.set()


async def test_a_raw_http_upload_cut_mid_body_resumes(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(6 * MiB)
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        url = f"/e1/staging/upload/{st.sid}"

        async def first_half_then_die() -> AsyncIterator[bytes]:
            for i in range(0, 3 * MiB, 256 * 1024):
                yield data[i : i + 256 * 1024]
            await anyio.sleep(0.5)  # let it get there
            raise OSError("the client process died")

        with pytest.raises((OSError, httpx.HTTPError)):
            await http.put(url, params={"path": "~/raw.bin", "size": len(data)}, content=first_half_then_die())
        with anyio.fail_after(10):
            while (state := await st.upload_state("~/raw.bin"))["active"] or not state["offset"]:
                await anyio.sleep(0.05)
        offset = state["offset"]
        assert 0 < offset <= 3 * MiB
        assert not (s.r1 / "raw.bin").exists()
        # a resume from the wrong offset is refused with the right one
        r = await http.put(url, params={"path": "~/raw.bin", "offset": 1, "size": len(data)}, content=b"x")
        assert r.status_code == 409
        assert f"resume at offset {offset}" in r.json()["detail"]
        # a body that ends before size: kept for a resume, 400 'incomplete'
        r = await http.put(
            url, params={"path": "~/raw.bin", "offset": offset, "size": len(data)}, content=data[offset : offset + 10]
        )
        assert r.status_code == 400
        assert "incomplete" in r.json()["detail"]
        offset += 10
        r = await http.put(
            url,
            params={"path": "~/raw.bin", "offset": offset, "size": len(data), "sha256": sha(data)},
            content=data[offset:],
        )
        assert r.status_code == 200, r.text
        assert (s.r1 / "raw.bin").read_bytes() == data
        # a partial upload can be dropped
        await http.put(url, params={"path": "~/gone.bin", "size": 10}, content=b"12345")
        assert await st.abandon_upload("~/gone.bin") is True
        assert await st.abandon_upload("~/gone.bin") is False
        assert not list(s.r1.glob(".gone*"))


async def test_resume_and_verify_of_downloads(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(4 * MiB + 11)
    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        (s.r1 / "f.bin").write_bytes(data)
        final = tmp_path / "f.bin"
        part = tmp_path / ".f.bin.radical-partial"
        part.write_bytes(data[: 3 * MiB])  # an earlier download got this far
        seen: list[int] = []
        got = await st.download("~/f.bin", final, progress=lambda done, total: seen.append(done))
        assert seen[0] == 3 * MiB
        assert got["sha256"] == sha(data)
        assert final.read_bytes() == data
        assert not part.exists()
        # a partial file that is not a prefix of the edge's file: the check finds it, nothing is put in place
        (tmp_path / ".g.bin.radical-partial").write_bytes(b"X" * MiB)
        with pytest.raises(ChecksumMismatch):
            await st.download("~/f.bin", tmp_path / "g.bin")
        assert not (tmp_path / "g.bin").exists()
        assert not (tmp_path / ".g.bin.radical-partial").exists()  # removed: the next try starts over
        assert (await st.download("~/f.bin", tmp_path / "g.bin"))["sha256"] == sha(data)
        # a partial file as long as the edge's file: only checked and put in place
        (tmp_path / ".h.bin.radical-partial").write_bytes(data)
        assert (await st.download("~/f.bin", tmp_path / "h.bin"))["size"] == len(data)
        assert (tmp_path / "h.bin").read_bytes() == data
        # an upload resumed from a different source: the hashes differ, nothing is put in place
        other = bytearray(data)
        other[10] ^= 0xFF
        await st.put("~/half", b"")  # (something else in the directory)
        src = tmp_path / "src.bin"
        src.write_bytes(bytes(other))
        async with s.http() as http:
            r = await http.put(
                f"/e1/staging/upload/{st.sid}", params={"path": "~/u.bin", "size": len(data)}, content=data[:MiB]
            )
            assert r.status_code == 400  # incomplete: kept
        with pytest.raises(ChecksumMismatch):
            await st.upload(src, "~/u.bin")
        assert not (s.r1 / "u.bin").exists()
        assert (await st.upload_state("~/u.bin"))["offset"] == 0  # dropped
        assert (await st.upload(src, "~/u.bin"))["sha256"] == sha(bytes(other))


async def test_a_download_never_writes_through_what_is_planted_at_its_partial_name(
    tmp_path: Path, tls: TLSFiles
) -> None:
    """Someone who can write in the target's directory plants a symlink (or a hard link, or a FIFO) at the
    download's partial-file name: the download never writes, truncates or blocks on what it leads to; it
    makes its own partial file (``O_EXCL | O_NOFOLLOW``) and continues only one that is a regular file of
    its user with no other link."""
    data = pattern(3 * MiB + 5)
    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        (s.r1 / "f.bin").write_bytes(data)
        victim = tmp_path / "victim.txt"
        victim.write_bytes(b"precious")
        down = tmp_path / "down"
        down.mkdir()
        part = down / ".f.bin.radical-partial"
        for resume in (True, False):
            part.symlink_to(victim)
            await st.download("~/f.bin", down, resume=resume, overwrite=True)
            assert victim.read_bytes() == b"precious"
            assert (down / "f.bin").read_bytes() == data
            assert not os.path.lexists(part)
        os.link(victim, part)  # a hard link: continuing it would write into the victim
        await st.download("~/f.bin", down, overwrite=True)
        assert victim.read_bytes() == b"precious"
        assert victim.stat().st_nlink == 1
        os.mkfifo(part)  # a FIFO: opening it for writing would block
        with anyio.fail_after(20):
            await st.download("~/f.bin", down, overwrite=True)
        assert (down / "f.bin").read_bytes() == data
        assert not os.path.lexists(part)
        # a genuine partial file of this user is still continued
        part.write_bytes(data[:MiB])
        seen: list[int] = []
        await st.download("~/f.bin", down, overwrite=True, progress=lambda done, total: seen.append(done))
        assert seen[0] == MiB
        assert (down / "f.bin").read_bytes() == data


async def test_a_download_into_a_directory_takes_a_real_file_name(tmp_path: Path, tls: TLSFiles) -> None:
    """Into a directory, a download is named after the remote path's last component: one that names no
    file (``..``, ``.``, ``~``) is refused before anything is written; a long one still gets a partial file."""
    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        down = tmp_path / "down"
        down.mkdir()
        for remote in ("~/..", "~/sub/..", ".", "~", "~/"):
            with pytest.raises(ValueError, match="give the local file's name"):
                await st.download(remote, down)
        assert not list(down.iterdir())
        assert not list(tmp_path.glob("*.radical-partial"))
        long_name = "n" * 250  # fits a file system's 255 bytes; ".{name}.radical-partial" would not
        (s.r1 / long_name).write_bytes(b"long")
        await st.download(f"~/{long_name}", down)
        assert (down / long_name).read_bytes() == b"long"
        assert [p.name for p in down.iterdir()] == [long_name]


async def test_a_range_download_to_a_path_replaces_a_file_only_with_overwrite(tmp_path: Path, tls: TLSFiles) -> None:
    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        (s.r1 / "f.bin").write_bytes(b"0123456789")
        mine = tmp_path / "mine.txt"
        mine.write_bytes(b"precious")
        with pytest.raises(FileExistsError):
            await st.download("~/f.bin", mine, range=(2, 5))
        assert mine.read_bytes() == b"precious"
        await st.download("~/f.bin", mine, range=(2, 5), overwrite=True)
        assert mine.read_bytes() == b"234"


async def test_escape_forms_are_refused_everywhere(tmp_path: Path, tls: TLSFiles) -> None:
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        secret = s.outside / "secret"
        secret.write_bytes(b"secret")
        (s.r1 / "d").mkdir()
        (s.r1 / "d" / "f").write_bytes(b"f")
        (s.r1 / "out").symlink_to(s.outside)
        (s.r1 / "inner").symlink_to(s.r1 / "d")
        (s.r1 / "secret-link").symlink_to(secret)
        swapped = s.r1 / "swap"
        swapped.symlink_to(s.outside)  # a directory someone replaced with a symlink before the request
        forms = [
            f"{s.r1}/../outside/secret",
            "~/../outside/secret",
            "~/d/../../outside/secret",
            "/etc/passwd",
            str(secret),
            "~/out/secret",
            "~/inner/f",
            "~/swap/secret",
        ]
        for form in forms:
            for call in (
                st.get(form),
                st.stat(form),
                st.checksum(form),
                st.download(form, io.BytesIO()),
                st.upload(b"x", form, overwrite=True),
                st.delete(form),
                st.mkdir(form + "-new", parents=True),
                st.move("~/d/f", form),
                st.listdir(form),
            ):
                with pytest.raises(AuthError) as info:
                    await call
                assert info.value.status == 403, form
        for link in ("~/secret-link", "~/out"):  # the last component a symlink: not read, not listed
            with pytest.raises(AuthError):
                await st.download(link, io.BytesIO())
            with pytest.raises(AuthError):
                await st.get(link)
        with pytest.raises(AuthError):
            await st.listdir("~/out")
        r = await http.get(f"/e1/staging/file/{st.sid}", params={"path": "~/out/secret"})
        assert r.status_code == 403
        # an upload over a symlink replaces the link (with overwrite), never writes through it
        assert (await st.upload(b"new", "~/secret-link", overwrite=True))["size"] == 3
        assert not (s.r1 / "secret-link").is_symlink()
        assert secret.read_bytes() == b"secret"
        assert sorted(p.name for p in s.outside.iterdir()) == ["secret"]
        # deleting a symlink removes the link, not what it points to
        assert (await st.delete("~/out"))["removed"] == "symlink"
        assert secret.exists()


async def test_a_directory_swapped_for_a_symlink_during_an_upload_changes_nothing(
    tmp_path: Path, tls: TLSFiles
) -> None:
    data = pattern(2 * MiB)
    async with site(tmp_path, tls, batch_bytes=64 * 1024) as s, s.client() as bridge:
        st = await staging(bridge)

        async def swap_during(name: str, verify: bool) -> dict[str, Any] | BaseException:
            """Upload ``~/{name}/new.bin`` slowly; once it is under way, swap ``{name}`` for a symlink out."""
            d = s.r1 / name
            d.mkdir()
            started = anyio.Event()

            async def body() -> AsyncIterator[bytes]:
                async for chunk in slow_chunks(data, 16, 0.05):
                    yield chunk
                    if (d / ".new.bin.radical-partial").exists():
                        started.set()

            result: list[dict[str, Any] | BaseException] = []

            async def run() -> None:
                try:
                    result.append(await st.upload(body(), f"~/{name}/new.bin", verify=verify))
                except RadicalEdgeError as exc:
                    result.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(10):
                    await started.wait()
                d.rename(s.r1 / f"{name}-moved")  # mid-request: the directory goes, a symlink out takes its place
                d.symlink_to(s.outside)
            return result[0]

        # one request: it keeps writing where its walk was, and puts the file in place there
        done = await swap_during("d", verify=False)
        assert isinstance(done, dict)
        assert done["sha256"] == sha(data)
        assert (s.r1 / "d-moved" / "new.bin").read_bytes() == data
        # with verification the rename is a second request: it walks again, meets the symlink, refuses
        refused = await swap_during("e", verify=True)
        assert isinstance(refused, AuthError)
        assert refused.status == 403
        assert (s.r1 / "e-moved" / ".new.bin.radical-partial").read_bytes() == data  # kept, complete
        assert not list(s.outside.iterdir())


async def test_overwrite_move_mkdir_delete_guards(tmp_path: Path, tls: TLSFiles) -> None:
    async with site(tmp_path, tls) as s, s.client() as bridge:
        st = await staging(bridge)
        await st.upload(b"one", "~/a.txt")
        with pytest.raises(HTTPError) as info:
            await st.upload(pattern(3 * MiB), "~/a.txt")  # refused at once, before the body is taken
        assert info.value.status == 409
        assert (s.r1 / "a.txt").read_bytes() == b"one"
        assert not list(s.r1.glob(".a.txt*"))
        assert (await st.upload(b"two", "~/a.txt", overwrite=True))["size"] == 3
        assert (s.r1 / "a.txt").read_bytes() == b"two"
        # mkdir
        assert await st.mkdir("~/x") == {"path": f"{s.r1}/x", "created": True}
        with pytest.raises(HTTPError) as info:
            await st.mkdir("~/x")
        assert info.value.status == 409
        assert (await st.mkdir("~/x", exist_ok=True))["created"] is False
        with pytest.raises(NotFound):
            await st.mkdir("~/p/q/r")
        assert (await st.mkdir("~/p/q/r", parents=True))["created"] is True
        with pytest.raises(HTTPError):
            await st.mkdir("~/a.txt", exist_ok=True)  # a file is in the way
        with pytest.raises(HTTPError):
            await st.upload(b"x", "~/x")  # a directory is in the way
        info_stat = await st.stat("~/p/q")
        assert (info_stat["type"], info_stat["path"]) == ("dir", f"{s.r1}/p/q")
        # move: within the roots, no overwrite unless asked
        await st.upload(b"b", "~/b.txt")
        with pytest.raises(HTTPError) as info:
            await st.move("~/a.txt", "~/b.txt")
        assert info.value.status == 409
        assert await st.move("~/a.txt", "~/b.txt", overwrite=True) == {"src": f"{s.r1}/a.txt", "dst": f"{s.r1}/b.txt"}
        assert (s.r1 / "b.txt").read_bytes() == b"two"
        assert (await st.move("~/p", "~/x/p"))["dst"] == f"{s.r1}/x/p"
        assert (s.r1 / "x" / "p" / "q" / "r").is_dir()
        with pytest.raises(NotFound):
            await st.move("~/missing", "~/y")
        with pytest.raises(HTTPError) as info:
            await st.move("~/x", "~/x/p/inside")  # a directory into itself
        assert info.value.status == 400
        # delete: files; directories only when recursive; never a root
        with pytest.raises(HTTPError) as info:
            await st.delete("~/x")
        assert info.value.status == 409
        assert await st.delete("~/x", recursive=True) == {"path": f"{s.r1}/x", "removed": "dir"}
        assert not (s.r1 / "x").exists()
        assert (await st.delete("~/b.txt"))["removed"] == "file"
        with pytest.raises(NotFound):
            await st.delete("~/b.txt")
        for root in ("~", str(s.r2), f"{s.r2}/"):
            with pytest.raises(AuthError):
                await st.delete(root, recursive=True)
            with pytest.raises(AuthError):
                await st.move(root, "~/moved-root")
        assert s.r1.is_dir()
        assert s.r2.is_dir()
        # two uploads to one target at once: the second is refused while the first runs
        async with anyio.create_task_group() as tg:
            tg.start_soon(st.upload, slow_chunks(pattern(MiB), 10, 0.1), "~/busy.bin")
            with anyio.fail_after(10):
                while not (await st.upload_state("~/busy.bin"))["active"]:
                    await anyio.sleep(0.02)
            with pytest.raises(HTTPError) as info:
                await st.upload(b"other", "~/busy.bin", resume=False)
            assert info.value.status == 409
            assert "in progress" in str(info.value.detail)
        assert (s.r1 / "busy.bin").read_bytes() == pattern(MiB)


async def test_a_session_in_use_does_not_expire_under_a_transfer(tmp_path: Path, tls: TLSFiles) -> None:
    # a 1 s TTL, collected every 0.25 s: the transfers below take about 2 s each; what the tunnel buffers
    # (a few MiB) leaves the edge done with a download ~0.3 s before the caller is, well within the TTL
    async with site(tmp_path, tls, session_ttl=1.0) as s, s.client() as bridge:
        st = await staging(bridge)
        idle = await staging(bridge)
        data = pattern(MiB)
        assert (await st.upload(slow_chunks(data, 20, 0.1), "~/slow.bin"))["sha256"] == sha(data)
        assert (await st.stat("~/slow.bin"))["size"] == len(data)  # still alive after it

        class SlowSink:
            def __init__(self) -> None:
                self.size = 0

            async def write(self, chunk: bytes) -> None:
                self.size += len(chunk)
                await anyio.sleep(0.1 * len(chunk) / MiB)  # 10 MiB/s, whatever the chunks' size

        (s.r1 / "big.bin").write_bytes(pattern(24 * MiB))
        started = time.monotonic()
        sink = SlowSink()
        await st.download("~/big.bin", sink, verify=False)
        assert time.monotonic() - started > 2.0  # twice the TTL
        assert sink.size == 24 * MiB
        assert (await st.stat("~/big.bin"))["size"] == 24 * MiB
        # the session that did nothing meanwhile is gone
        with pytest.raises(RadicalEdgeError) as info:
            await idle.stat("~/slow.bin")
        assert info.value.status in (404, 410)
        idle.sid = None  # (nothing to unregister at close)


async def test_copy_between_edges(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(9 * MiB + 1)
    async with site(tmp_path, tls) as s, s.client() as bridge:
        a = await staging(bridge, "e1")
        b = await staging(bridge, "e2")
        (s.r1 / "src.bin").write_bytes(data)  # no checksum known: the source is asked after the copy
        seen: list[tuple[int, int | None]] = []
        got = await a.copy("~/src.bin", b, "~/dir/copy.bin", progress=lambda done, total: seen.append((done, total)))
        assert got == {"path": f"{s.e2root}/dir/copy.bin", "size": len(data), "sha256": sha(data)}
        assert (s.e2root / "dir" / "copy.bin").read_bytes() == data
        assert seen[-1] == (len(data), len(data))
        with pytest.raises(HTTPError) as info:
            await a.copy("~/src.bin", b, "~/dir/copy.bin")
        assert info.value.status == 409
        # known checksum (sent in the download's header): checked by the destination itself before the rename
        assert (await b.copy("~/dir/copy.bin", a, "~/again.bin"))["sha256"] == sha(data)
        # a copy cut short resumes from what the destination holds
        async with s.http() as http:
            r = await http.put(
                f"/e2/staging/upload/{b.sid}", params={"path": "~/resumed.bin", "size": len(data)}, content=data[:MiB]
            )
            assert r.status_code == 400
        seen.clear()
        assert (await a.copy("~/src.bin", b, "~/resumed.bin", progress=lambda d, t: seen.append((d, t))))[
            "sha256"
        ] == sha(data)
        assert seen[0] == (MiB, len(data))
        assert (s.e2root / "resumed.bin").read_bytes() == data


async def test_the_blocking_staging_client(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(2 * MiB)
    local = tmp_path / "src.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s:

        def script() -> None:
            with BridgeClient(s.url, TOKEN, s.tls.ca) as bridge:
                st = bridge.get_edge_client("e1").get_plugin("staging")
                other = bridge.get_edge_client("e2").get_plugin("staging")
                assert isinstance(st, StagingClient)
                assert st.upload(local, "~/b.bin")["sha256"] == sha(data)
                assert st.download("~/b.bin", tmp_path / "back.bin")["size"] == len(data)
                assert st.copy("~/b.bin", other, "~/c.bin")["sha256"] == sha(data)
                assert [e["name"] for e in st.listdir("~")["entries"]] == ["b.bin"]
                assert st.checksum("~/b.bin") == sha(data)
                assert st.mkdir("~/d")["created"]
                assert st.move("~/b.bin", "~/d/b.bin")["dst"].endswith("/d/b.bin")
                assert st.delete("~/d", recursive=True)["removed"] == "dir"

        await anyio.to_thread.run_sync(script)
        assert (s.e2root / "c.bin").read_bytes() == data
    assert (tmp_path / "back.bin").read_bytes() == data


async def test_hostile_requests_get_4xx_never_500(tmp_path: Path, tls: TLSFiles) -> None:
    """Requests a token holder can send that used to end in a 500 (an exception the plugin did not expect)."""
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        put = f"/e1/staging/put/{st.sid}"
        # JSON nested deeper than the parser's recursion limit, well within the size limit
        r = await http.post(put, content=b"[" * 100_000 + b"]" * 100_000)
        assert r.status_code == 400, r.text
        # a lone surrogate in a JSON string: no file name can be made of it
        for name in ("~/\\ud800", "~/\\udcff"):
            body = '{"filename": "' + name + '", "content": ""}'
            r = await http.post(put, content=body.encode(), headers={"content-type": "application/json"})
            assert r.status_code == 400, (name, r.text)
        assert os.listdir(s.r1) == []
        # a name that is not UTF-8 (made by the edge user) does not break the listing of its directory
        (s.r1 / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x")
        r = await http.get(f"/e1/staging/list/{st.sid}", params={"path": "~"})
        assert r.status_code == 200, r.text
        assert [e["name"] for e in r.json()["entries"]] == ["caf\\xe9.txt"]
        # a Range number longer than int() converts
        (s.r1 / "f.bin").write_bytes(b"0123456789")
        r = await http.get(
            f"/e1/staging/file/{st.sid}", params={"path": "~/f.bin"}, headers={"Range": "bytes=" + "9" * 5000 + "-"}
        )
        assert r.status_code == 416, r.text


async def test_the_base64_routes_hold_few_files_in_memory_at_once(tmp_path: Path, tls: TLSFiles) -> None:
    """Each ``put`` holds its body, the parsed JSON and the decoded file (some 4x the file, 8 MiB by default)
    while it works; 128 at once (the tunnel's streams) would be gigabytes.  A few run at a time."""
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        plugin = s.plugins["e1"]
        running, most = 0, 0

        def slow_put(filename: str, content: bytes, overwrite: bool) -> dict[str, Any]:
            nonlocal running, most
            running += 1
            most = max(most, running)
            time.sleep(0.2)
            running -= 1
            return {"path": filename, "size": len(content), "sha256": sha(content)}

        plugin._put_whole = slow_put  # type: ignore[method-assign]

        async def one(i: int) -> None:
            r = await http.post(f"/e1/staging/put/{st.sid}", json={"filename": f"~/p{i}", "content": "eA=="})
            assert r.status_code == 200, r.text

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, i)
        assert 1 <= most <= 4


async def test_a_resume_that_leaves_much_to_hash_takes_a_hashing_slot(tmp_path: Path, tls: TLSFiles) -> None:
    """A partial file made of a big file already on the edge (moved onto the partial name), then "resumed"
    with no bytes: finishing hashes all of it from disk.  That is hashing like a checksum's, so it waits for
    one of the few hashing slots instead of taking one of the worker threads every plugin shares."""
    async with site(tmp_path, tls, max_hashing=1) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        size = 64 * MiB
        with (s.r1 / "big.bin").open("wb") as fh:
            fh.truncate(size)  # sparse: quick to make and to hash
        await st.move("~/big.bin", "~/.x.radical-partial")
        plugin = s.plugins["e1"]
        done = anyio.Event()
        answer: list[httpx.Response] = []

        async def resume() -> None:
            answer.append(
                await http.put(
                    f"/e1/staging/upload/{st.sid}",
                    params={"path": "~/x", "offset": size, "commit": "false"},
                    content=b"",
                )
            )
            done.set()

        # a checksum of some huge file holds the one slot
        async with anyio.create_task_group() as tg, plugin._hash_slots:
            tg.start_soon(resume)
            with anyio.move_on_after(1):
                await done.wait()
            assert not done.is_set(), answer[0].text if answer else ""
        assert answer[0].status_code == 200, answer[0].text
        assert answer[0].json()["sha256"] == hashlib.sha256(bytes(size)).hexdigest()
