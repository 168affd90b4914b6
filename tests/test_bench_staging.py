"""The benchmark's staging section (:mod:`radical_edge_bench._staging`): a small run, its fields, the bytes arrived."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from radical_edge_bench import _staging as staging_bench
from radical_edge_bench._bench import Bench
from radical_edge_bench._cli import Options
from radical_edge_bench._report import render

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def test_the_staging_section_moves_and_verifies_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("RADICAL_BRIDGE_")]:
        monkeypatch.delenv(name)
    bench = Bench(Options(quick=True, size_mib=3), tmp_path)
    res: dict[str, Any] = {}
    try:
        bench.start()
        anyio.run(staging_bench.measure, bench, res)
        assert "raw-tls" not in bench.procs  # the raw server is stopped once measured
    finally:
        bench.stop()
    st = res["staging"]
    assert st["size_mib"] == 3
    assert "AsyncStagingClient" in st["driver"]
    for side in ("staging", "raw_tls"):
        for kind in ("upload", "download"):
            assert _positive(st[side][f"{kind}_mib_s"]), st
            cpu = st[side][f"{kind}_cpu_s_per_gib"]
            keys = {"bridge", "edge", "bridge+edge", "client"} if side == "staging" else {"server", "client"}
            assert set(cpu) == keys, cpu
            assert all(v >= 0 for v in cpu.values()), cpu
    http = st["staging_raw_http"]  # the same routes without the SDK: the raw client, HTTP to the bridge
    for kind in ("upload", "download"):
        assert _positive(http[f"{kind}_mib_s"]), http
        assert _positive(http["ratios"][kind]), http
        assert {"bridge", "edge", "client"} <= set(http[f"{kind}_cpu_s_per_gib"]), http
    assert st["staging"]["verified"] is True  # the SDK compared SHA-256 both ways, and the file read back matched
    assert len(st["staging"]["sha256"]) == 64
    for kind in ("upload", "download"):
        assert st["ratios"][kind] == pytest.approx(
            st["staging"][f"{kind}_mib_s"] / st["raw_tls"][f"{kind}_mib_s"], abs=0.01
        )
    # nothing left behind in the staging root or the local work directory
    assert not list((tmp_path / staging_bench.ROOT_DIR).iterdir())
    assert not list((tmp_path / "staging-local").iterdir())
    assert not list((tmp_path / staging_bench.RAW_DIR).iterdir())
    rows = staging_bench.target_rows(res)
    assert [r[0] for r in rows] == ["staging upload/raw TLS", "staging download/raw TLS"]
    assert all(r[2:4] == (">=", 0.5) for r in rows)
    lines = "\n".join(staging_bench.render(res))
    if shutil.which("socat"):  # the raw copy again through one TLS relay in C
        relayed = st["raw_tls_relay"]
        for kind, row in zip(("upload", "download"), rows, strict=True):
            assert _positive(relayed[f"{kind}_mib_s"]), relayed
            assert relayed["ratios"][kind] == pytest.approx(
                relayed[f"{kind}_mib_s"] / st["raw_tls"][f"{kind}_mib_s"], abs=0.01
            )
            assert row[4]["relay"] == relayed["ratios"][kind]
        assert "the raw TLS copy through one TLS relay in C (8.)" in lines
    else:
        assert "raw_tls_relay" not in st
        assert all(r[4]["relay"] is None for r in rows)
    aio = st["raw_tls_aio_relay"]  # and through one on asyncio, socat or not
    for kind, row in zip(("upload", "download"), rows, strict=True):
        assert _positive(aio[f"{kind}_mib_s"]), aio
        assert aio["ratios"][kind] == pytest.approx(aio[f"{kind}_mib_s"] / st["raw_tls"][f"{kind}_mib_s"], abs=0.01)
        assert row[4]["aio_relay"] == aio["ratios"][kind]
    # every timed copy, up and down, plain and hashed, went through it
    assert aio["connections"] == 4 * staging_bench.RUNS
    assert "the raw TLS copy through one TLS relay on asyncio (8.)" in lines
    # the copy verified as staging is (digests compared, or the section would have failed): straight and relayed
    hashed = st["raw_tls_sha256"]
    assert set(hashed) == ({"direct", "relay", "aio_relay"} if shutil.which("socat") else {"direct", "aio_relay"})
    for copy in hashed.values():
        for kind in ("upload", "download"):
            assert _positive(copy[f"{kind}_mib_s"]), copy
            assert copy["ratios"][kind] == pytest.approx(
                copy[f"{kind}_mib_s"] / st["raw_tls"][f"{kind}_mib_s"], abs=0.01
            )
    assert "the raw TLS copy verified with SHA-256 as staging is" in lines
    assert "and through the TLS relay on asyncio: upload" in lines
    assert "7. staging, 3 MiB (MiB/s)" in lines
    assert "sha256 verified" in lines
    assert "without the SDK" in lines
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_table_without_the_section() -> None:
    assert staging_bench.render({}) == []
    assert staging_bench.target_rows({}) == [
        ("staging upload/raw TLS", None, ">=", 0.5, {"relay": None, "aio_relay": None}),
        ("staging download/raw TLS", None, ">=", 0.5, {"relay": None, "aio_relay": None}),
    ]
    assert callable(render)


def _lying_server(ca: trustme.CA, listener: socket.socket) -> None:
    """One connection of the raw copy's protocol, verified, answered with a wrong digest."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    conn, _ = listener.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        head = staging_bench._recv_exact(tls, 10)
        size = int.from_bytes(head[2:], "big")
        if head[:1] == b"U":
            staging_bench._recv_exact(tls, size)
            tls.sendall(size.to_bytes(8, "big") + bytes(32))
        else:
            tls.sendall(b"x" * size + bytes(32))


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_the_verified_raw_copy_compares_the_digests(tmp_path: Path, ca: trustme.CA, direction: str) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 70_000)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_lying_server, args=(ca, listener), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        if direction == "upload":
            copy = functools.partial(staging_bench.raw_upload, port, ctx, source, 70_000, verify=True)
        else:
            copy = functools.partial(staging_bench.raw_download, port, ctx, tmp_path / "back.bin", 70_000, verify=True)
        with pytest.raises(RuntimeError, match=f"SHA-256 of the {direction} differ"):
            copy()
        server.join(10)
