"""The per-layer CPU of `radical-edge bench` (radical_edge_bench._layers): each layer carries the real
request and answer, and every layer costs something plausible (the timings themselves are not asserted)."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from radical_edge_bench import _layers as layers
from radical_edge_bench._app import SMALL_BODY, build_app
from radical_edge_bench._report import _layers as render_layers
from radical_edge_cli import ensure_dev_tls

TOKEN = "t0ken-" * 6
HOST = "127.0.0.1:8443"
COLUMNS = ("bridge", "edge", "bridge+edge", "direct")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> layers.TLSFiles:
    tls = ensure_dev_tls(Path(tmp_path_factory.mktemp("tls")))
    return layers.TLSFiles(tls.ca, tls.cert, tls.key)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(scope="module")
def messages(runner: asyncio.Runner) -> layers.Messages:
    return layers.build_messages(TOKEN, HOST, runner, build_app())


def test_the_messages_are_those_of_the_real_path(messages: layers.Messages) -> None:
    m = messages
    assert m.client_request.startswith(b"GET /bench-edge/bench/small HTTP/1.1\r\n")
    assert f"Authorization: Bearer {TOKEN}".encode() in m.client_request
    # the bridge forwards the rest of the path, without the credential and the host, with its own headers last
    assert (m.method, m.tunnel_path) == ("GET", "/bench/small")
    assert m.forwarded_headers == [(b"x-radical-caller", b"token"), (b"x-radical-root-path", b"/bench-edge")]
    # the app's answer, with FastAPI's headers
    assert (m.status, m.body) == (200, SMALL_BODY)
    assert dict(m.response_headers) == {
        b"content-length": str(len(SMALL_BODY)).encode(),
        b"content-type": b"application/json",
    }
    # the HTTP answers: the bridge's in one write, uvicorn's as head and body (with its date and server)
    assert m.bridge_response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert m.bridge_response.endswith(b"\r\n\r\n" + SMALL_BODY)
    head, body = m.direct_response
    assert b"\r\nserver: uvicorn\r\n" in head
    assert b"\r\ndate: " in head
    assert body == SMALL_BODY
    # one WebSocket message each way: the edge's is masked (RFC 6455: a client masks), the bridge's is not
    assert m.ws_to_edge[1] & 0x80 == 0
    assert m.ws_to_edge.endswith(m.tunnel_request)
    assert m.ws_to_bridge[1] & 0x80
    assert len(m.ws_to_bridge) == len(m.tunnel_response) + 2 + (2 if len(m.tunnel_response) > 125 else 0) + 4


def _undated(parts: list[bytes]) -> list[bytes]:
    """``parts`` with the value of an HTTP ``date`` header blanked."""
    return [re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", part) for part in parts]


def test_each_layer_carries_the_request_and_the_answer(
    messages: layers.Messages, files: layers.TLSFiles, runner: asyncio.Runner
) -> None:
    m = messages
    bridge_ctx = layers.bridge_server_context(files)
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    direct_app, direct_ctx = layers.uvicorn_app(files)

    http = layers.BridgeHTTP(m)
    tunnel = layers.TunnelFraming(m)
    for _ in range(3):  # keep-alive: the same connection, request after request
        http.step()
        tunnel.step()
    assert http.request is not None
    assert http.request.target == b"/bench-edge/bench/small"
    assert (b"authorization", f"Bearer {TOKEN}".encode()) in list(http.request.headers)
    assert http.sent == m.bridge_response
    assert tunnel.request is not None
    assert tunnel.request.path == "/bench/small"
    assert list(tunnel.request.headers) == m.forwarded_headers
    assert tunnel.request.stream_id == 6  # the third stream the hub opened
    assert tunnel.response is not None
    assert tunnel.response.status == 200
    assert tunnel.data is not None
    assert tunnel.data.data == SMALL_BODY
    assert tunnel.data.end_stream

    direct = layers.DirectHTTP(m)
    for _ in range(3):
        direct.step()
    assert direct.request is not None
    assert direct.request.target == b"/bench-edge/bench/small"
    # the same answer, but for uvicorn's date header, which reads the clock (the messages were made earlier, and
    # a second can tick in between)
    assert _undated(direct.sent) == _undated(m.direct_response)

    ws = layers.WebSocket(m)
    tls_client = layers.ClientHopTLS(m, bridge_ctx, client_ctx)
    tls_tunnel = layers.TunnelHopTLS(m, bridge_ctx, client_ctx)
    tls_direct = layers.DirectTLS(m, direct_ctx, client_ctx)
    for layer in (ws, tls_client, tls_tunnel, tls_direct):
        layer.step()
        layer.check()
    assert ws.at_edge == m.tunnel_request
    assert ws.at_bridge == m.tunnel_response
    assert tls_client.got == m.client_request
    assert tls_client.answer == m.bridge_response
    assert tls_tunnel.at_edge == m.ws_to_edge
    assert tls_tunnel.at_bridge == m.ws_to_bridge
    assert tls_direct.answer == b"".join(m.direct_response)
    assert tls_tunnel.bridge.obj.version() is not None

    edge_asgi = layers.EdgeASGI(m, build_app())
    direct_asgi = layers.DirectASGI(m, direct_app)
    for asgi in (edge_asgi, direct_asgi):
        runner.run(asgi.astep())
        assert (asgi.call.status, asgi.call.body, asgi.call.finished) == (200, SMALL_BODY, True)
    assert edge_asgi.scope["path"] == "/bench-edge/bench/small"
    assert edge_asgi.scope["root_path"] == "/bench-edge/bench"


def test_a_broken_layer_is_caught(messages: layers.Messages) -> None:
    http = layers.BridgeHTTP(messages)
    http.step()
    http.request = h11.Request(method="GET", target="/elsewhere", headers=[("host", "x")])
    with pytest.raises(RuntimeError):
        http.check()


def test_measure_gives_every_layer_a_cost(files: layers.TLSFiles) -> None:
    res = layers.measure(files, token=TOKEN, host=HOST, seconds=0.02)
    rows = {r["key"]: r for r in res["rows"]}
    assert list(rows) == ["http", "tunnel", "websocket", "tls_client", "tls_tunnel", "asgi"]
    expected = {
        "http": ("bridge", "direct"),
        "tunnel": ("bridge", "edge"),
        "websocket": ("bridge", "edge"),
        "tls_client": ("bridge", "direct"),
        "tls_tunnel": ("bridge", "edge"),
        "asgi": ("edge", "direct"),
    }
    for key, parties in expected.items():
        row = rows[key]
        for party in ("bridge", "edge", "direct"):
            if party in parties:
                assert row[party] > 0, (key, party, row)
            else:
                assert row[party] is None, (key, party, row)
        assert row["bridge+edge"] == pytest.approx((row["bridge"] or 0) + (row["edge"] or 0), abs=0.02)
    sums = res["sum_us"]
    for col in COLUMNS:
        assert sums[col] == pytest.approx(sum(r[col] or 0 for r in res["rows"]), abs=0.1)
    # generous: the layers of one small request cost well under a few milliseconds, even on a slow, busy machine
    assert 0 < sums["bridge+edge"] < 5000, sums
    assert 0 < sums["direct"] < 3000, sums
    assert res["tls"].startswith("TLS")
    assert res["seconds"] < 10

    # with the processes' CPU per request: the remainder is what the layers leave out
    small = {
        "tunnel_http": {
            "one_client": {"cpu_ms_per_request": {"bridge": 0.5, "edge": 0.36, "bridge+edge": 0.86}},
            "concurrent": {"cpu_ms_per_request": {"bridge": 0.3, "edge": 0.2, "bridge+edge": 0.5}},
        },
        "direct": {
            "one_client": {"cpu_ms_per_request": {"server": 0.18}},
            "concurrent": {"cpu_ms_per_request": {"server": 0.12}},
        },
    }
    full = layers.with_measured(res, small)
    assert full["measured_us"]["one_client"] == {"bridge": 500.0, "edge": 360.0, "bridge+edge": 860.0, "direct": 180.0}
    for run in ("one_client", "concurrent"):
        for col in COLUMNS:
            assert full["remainder_us"][run][col] == pytest.approx(full["measured_us"][run][col] - sums[col], abs=0.02)
    assert "event loop" in full["remainder_label"]

    text = "\n".join(render_layers(full, 64))
    assert "per-layer CPU per small request (µs)" in text
    for row in res["rows"]:
        assert row["label"] in text
    assert "remainder *, 1 client" in text
    assert "remainder *, 64 concurrent" in text
    assert full["remainder_label"] in text


def test_no_layers_no_section() -> None:
    assert render_layers(None, 64) == []
