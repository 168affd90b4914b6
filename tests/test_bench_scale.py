"""`radical-edge bench --scale N --json`: N real edges and N SDK connections against a real bridge, a bridge
restart, and every number of the report there and sane (timings are not asserted against the targets)."""

from __future__ import annotations

import json
import sys

import pytest

from radical_edge_bench import build_parser, render
from radical_edge_bench._scale import ECHO_MIN_EXCHANGES

from .bench_helpers import run_bench

pytest.importorskip("fastapi")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc")

N = 20


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def _spread_ok(spread: dict[str, float | None], most: float) -> None:
    values = [spread[k] for k in ("min", "p50", "p90", "max")]
    assert all(isinstance(v, float) for v in values), spread
    assert 0 < values[0] <= values[1] <= values[2] <= values[3] < most, spread  # type: ignore[operator]


def test_scale_bench_connects_restarts_and_reports() -> None:
    done, elapsed = run_bench("--scale", str(N), "--idle-seconds", "1", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert elapsed < 60, f"--scale {N} took {elapsed:.0f} s"
    res = json.loads(done.stdout)
    assert res["options"]["scale"] == N
    s = res["scale"]
    assert s["edges"] == s["sdk_connections"] == N
    assert "--max-connections-per-peer" in s["per_peer_cap"]  # says how 2N connections from 127.0.0.1 got in

    # all connected, as the bridge lists them
    assert s["connect"]["edges_registered"] == N
    assert _positive(s["connect"]["seconds"])

    r = s["rss"]
    assert 5 < r["bridge_before_mib"] < r["bridge_after_mib"] < 2048, r
    assert r["per_edge_kib"] == pytest.approx(r["delta_mib"] * 1024 / N, rel=0.01)
    assert r["per_connection_kib"] == pytest.approx(r["per_edge_kib"] / 2, rel=0.01)  # SDK connections counted
    assert _positive(r["load_mib"])

    cpu = s["idle_cpu"]
    assert cpu["seconds"] >= 1
    assert 0 <= cpu["bridge_pct"] < 100
    assert 0 <= cpu["load_pct"] < 100
    assert 0 < s["heartbeat_interval_s"] <= s["idle_heartbeat_interval_s"]
    # beside it, what asyncio alone spends on the same traffic: a plain TCP echo server, measured first
    echo = cpu["echo_floor"]
    assert echo["seconds"] >= 1
    assert 0 <= echo["server_pct"] < 100
    assert echo["message_bytes"] == 47  # a heartbeat PING's TLS record
    # each connection beats once per interval (first at a random phase): at most this many in the window
    intervals = (s["idle_heartbeat_interval_s"], s["client_heartbeat_interval_s"])
    most = sum(N * (echo["seconds"] / i + 1) for i in intervals)
    assert 0 <= echo["exchanges"] <= most, (echo, most)
    # a per-exchange figure only from enough exchanges to count CPU ticks over (N=20 for 1 s: a handful)
    assert (echo["us_per_exchange"] is None) == (echo["exchanges"] < ECHO_MIN_EXCHANGES)

    er = s["edges_route"]
    assert er["total"] == er["connected"] == N
    assert 0 < er["p50_ms"] <= er["max_ms"] < 10_000
    snap = s["snapshot"]
    assert snap["sse"]["edges"] == snap["connect"]["edges"] == N
    assert _positive(snap["sse"]["ms"])
    assert _positive(snap["connect"]["ms"])
    assert snap["connect"]["parts"] >= 1

    # every request through the bridge reached an edge's plugin, before and after the restart
    for when in ("before_restart", "after_restart"):
        check = s["routing_check"][when]
        assert check["ok"] == check["of"] == N, check

    rs = s["restart"]
    assert rs["signal"] == "SIGKILL"
    assert 0 < rs["bridge_listening_s"] < 60
    assert 0 < rs["all_edges_back_s"] < 60
    assert rs["healthz_edges"] == N
    assert rs["edges_back"] == rs["clients_back"] == N
    assert rs["handshakes"] == {"edges": 2 * N, "clients": 2 * N}  # each came back once, no flapping
    for key in ("client_redial_started_s", "edge_registered_s", "edge_reconnect_s", "client_reconnect_s"):
        _spread_ok(rs[key], 60)
    assert rs["edge_registered_s"]["max"] == rs["all_edges_back_s"]
    hist = rs["histogram"]
    assert _positive(hist["bin_s"])
    assert sum(hist["edges"]) == sum(hist["clients"]) == N
    assert rs["bridge_tls_handshake_failures"] == 0
    assert _positive(rs["bridge_rss_after_mib"])

    names = [t["name"] for t in res["targets"]]
    assert len(names) == len(set(names)) == 4
    assert any(n.startswith("RSS per idle edge KiB") for n in names)
    assert any(n.startswith("bridge idle CPU %") for n in names)
    assert any(n.startswith("all edges back after restart s") for n in names)
    assert any(n.startswith("GET /edges p50 ms") for n in names)
    for t in res["targets"]:
        assert t["met"] in (True, False), t
        assert t["target"].startswith("<= "), t
    idle = next(t for t in res["targets"] if t["name"].startswith("bridge idle CPU"))
    assert idle["echo"] == echo["server_pct"]  # printed beside the bridge's
    restart = next(t for t in res["targets"] if t["name"].startswith("all edges back"))
    assert restart["met"] is True  # N edges on loopback are back within seconds

    table = render(res)
    assert f"--scale {N}" in table
    assert "targets" in table
    assert "SDK connection" in table  # the per-edge memory says the SDK connections are in it
    assert "the event loop alone" in table
    assert "too few exchanges in this window" in table
    header = next(line for line in table.splitlines() if line.startswith("targets"))
    assert header.rstrip().endswith("echo")
    idle_line = next(line for line in table.splitlines() if "bridge idle CPU" in line)
    assert idle_line.rstrip().endswith(f"{echo['server_pct']:.3f}")


def test_scale_takes_a_positive_count() -> None:
    parser = build_parser()
    assert parser.parse_args(["--scale", "1000"]).scale == 1000
    with pytest.raises(SystemExit):
        parser.parse_args(["--scale", "0"])
