"""`radical-edge bench --quick --json`: every measurement is there and sane (timings are not asserted)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from radical_edge_bench._load import ResponseReader

from .bench_helpers import run_bench

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def test_quick_bench_reports_every_measurement() -> None:
    # as a user runs it: with the accelerators of the speedups extra (installed with the test extra), so the
    # bulk section also measures a bridge and an edge without them
    done, elapsed = run_bench("--quick", "--json", drop=("RADICAL_EDGE_PURE_PYTHON",))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert elapsed < 90, f"--quick took {elapsed:.0f} s"
    res = json.loads(done.stdout)

    assert res["driver"]["name"] in ("wrk", "python")
    assert "verif" in res["driver"]["detail"]  # says whether TLS certificates are verified
    assert res["machine"]["cpus"] >= 1
    assert res["options"]["quick"] is True

    small = res["small"]
    for via in ("tunnel_http", "tunnel_ws", "direct"):
        for run in ("one_client", "concurrent"):
            r = small[via][run]
            assert r["requests"] > 0, (via, run, r)
            assert r["errors"] == 0, (via, run, r)
            assert _positive(r["rps"]), (via, run, r)
            assert 0 < r["p50_ms"] <= r["p99_ms"] < 10_000, (via, run, r)
            cpu = r["cpu_ms_per_request"]
            keys = {"server"} if via == "direct" else {"bridge", "edge", "bridge+edge"}
            assert keys <= set(cpu), cpu
            assert all(v >= 0 for v in cpu.values()), cpu
            if via != "direct":
                assert cpu["bridge+edge"] == pytest.approx(cpu["bridge"] + cpu["edge"], abs=0.002)
    assert small["tunnel_ws"]["concurrent"]["cpu_ms_per_request"]["client"] > 0  # the Python driver's own CPU
    assert all(_positive(v) for v in small["ratios"].values()), small["ratios"]
    assert set(small["rss_mib"]) == {"bridge", "edge"}
    assert small["requests_total"] > 0

    bulk = res["bulk"]
    assert bulk["size_mib"] == 8
    assert res["machine"]["masking"] == bulk["masking"] == "C (websockets.speedups)"
    for via in ("tunnel", "tunnel_pure", "direct"):
        for kind in ("download", "upload"):
            assert _positive(bulk[via][f"{kind}_mib_s"]), bulk
            assert _positive(bulk["ratios"][kind]), bulk
            assert _positive(bulk["ratios"][f"{kind}_pure"]), bulk
    assert set(bulk["tunnel_pure"]["download_cpu_s_per_gib"]) == {"bridge", "edge"}

    rss = res["rss"]
    for kind in ("download", "upload"):
        assert _positive(rss[kind]["mib_s"])
        for proc in ("bridge", "edge"):
            e = rss[kind][proc]
            assert 5 < e["idle_rss_mib"] < 2048, e
            assert e["peak_rss_sampled_mib"] >= e["idle_rss_mib"], e
            assert 0 <= e["growth_mib"] < 1024, e

    loaded = res["loaded"]
    assert loaded["loaded"]["requests"] > 0
    assert loaded["loaded"]["errors"] == 0
    assert _positive(loaded["loaded"]["background_mib_s"])  # the transfer really ran meanwhile
    assert _positive(loaded["ratios"]["p50"])
    assert _positive(loaded["ratios"]["p99"])

    staging = res["staging"]  # section 7 (tests/test_bench_staging.py checks it in detail)
    assert staging["size_mib"] == 8
    assert staging["staging"]["verified"] is True
    for kind in ("upload", "download"):
        assert _positive(staging["staging"][f"{kind}_mib_s"]), staging
        assert _positive(staging["raw_tls"][f"{kind}_mib_s"]), staging
        assert _positive(staging["ratios"][kind]), staging

    relay = res["relay"]  # section 8: one TLS relay in C in front of the direct server
    relayed = {"p50 tunnel_http/direct, 1 client", "bulk download tunnel/direct", "staging upload/raw TLS"}
    if shutil.which("socat"):
        assert relay["program"].startswith("socat "), relay
        for key in ("p50_ms", "download_mib_s", "upload_mib_s"):
            assert _positive(relay[key]["direct"]), relay
            assert _positive(relay[key]["relay"]), relay
        assert all(_positive(v) for v in relay["ratios"].values()), relay
        assert relay["ratios"]["p50"] == pytest.approx(relay["p50_ms"]["relay"] / relay["p50_ms"]["direct"], rel=0.01)
        for kind in ("upload", "download"):
            assert _positive(staging["raw_tls_relay"][f"{kind}_mib_s"]), staging
        assert all(_positive(t["relay"]) for t in res["targets"] if t["name"] in relayed), res["targets"]
    else:
        assert "socat is not installed" in relay["skipped"]
        assert "raw_tls_relay" not in staging
        assert all(t["relay"] is None for t in res["targets"])
    assert all(t["relay"] is None for t in res["targets"] if t["name"].startswith(("CPU", "RSS", "p99")))
    aio = res["aio_relay"]  # section 8 too: one TLS relay on asyncio, measured with or without socat
    assert aio["program"].startswith("asyncio, Python 3."), aio
    for key in ("p50_ms", "download_mib_s", "upload_mib_s"):
        assert _positive(aio[key]["direct"]), aio
        assert _positive(aio[key]["relay"]), aio
        if shutil.which("socat"):
            assert aio[key]["direct"] == relay[key]["direct"]  # one baseline for both relays
    assert aio["ratios"]["download"] == pytest.approx(
        aio["download_mib_s"]["relay"] / aio["download_mib_s"]["direct"], rel=0.01
    )
    # and at --connections (the C relay forks per connection: none there): p99, and CPU of relay + server
    assert "p99_concurrent_ms" not in relay
    # every connection of the 64-connection run took a connection to the server dialled before it
    assert aio["concurrent_connections"] == {"primed": res["options"]["connections"], "dialled": 0}
    conc = aio["cpu_ms_per_request_concurrent"]
    assert _positive(conc["direct"]), conc
    assert conc["relay"] > conc["direct"], conc  # the relay's CPU comes on top of the server's
    assert aio["ratios"]["cpu"] == pytest.approx(conc["relay"] / conc["direct"], rel=0.01)
    assert aio["ratios"]["p99"] == pytest.approx(
        aio["p99_concurrent_ms"]["relay"] / aio["p99_concurrent_ms"]["direct"], rel=0.01
    )
    aio_relayed = ("p50 tunnel_", "bulk ", "CPU/request tunnel_", "p99 tunnel_", "staging ")
    assert all(_positive(t["aio_relay"]) for t in res["targets"] if t["name"].startswith(aio_relayed)), res["targets"]
    assert all(
        t["aio_relay"] is None for t in res["targets"] if t["name"].startswith(("RSS", "p50 loaded", "p99 loaded"))
    )

    names = [t["name"] for t in res["targets"]]
    assert len(names) == 16
    assert len(set(names)) == 16
    assert {"staging upload/raw TLS", "staging download/raw TLS"} <= set(names)
    for t in res["targets"]:
        assert t["met"] in (True, False), t
        assert t["target"].split()[0] in ("<=", ">="), t


def test_the_table_names_the_driver_and_the_targets() -> None:
    from radical_edge_bench import render  # noqa: PLC0415

    r = {"requests": 10, "seconds": 1.0, "errors": 0, "rps": 10.0, "p50_ms": 1.0, "p99_ms": 2.0}
    cpu = {"bridge": 0.5, "edge": 0.25, "bridge+edge": 0.75}
    run = {**r, "cpu_ms_per_request": cpu}
    direct = {**r, "cpu_ms_per_request": {"server": 0.1}}
    res = {
        "machine": {"cpus": 2, "cpu_model": "x", "python": "3", "kernel": "6"},
        "driver": {
            "name": "wrk",
            "detail": "wrk (does not verify TLS certificates)",
            "websocket": "ws",
            "direct_server": "u",
        },
        "options": {"duration_s": 1, "connections": 64, "size_mib": 8, "big_mib": 32},
        "small": {
            "tunnel_http": {"one_client": run, "concurrent": run},
            "tunnel_ws": {"one_client": run, "concurrent": run},
            "direct": {"one_client": direct, "concurrent": direct},
            "rss_mib": {"bridge": {"before": 40.0, "after": 40.5}, "edge": {"before": 50.0, "after": 50.0}},
            "requests_total": 40,
            "ratios": {
                f"{v}_{k}": 1.0
                for v in ("tunnel_http", "tunnel_ws")
                for k in (
                    "p50_over_direct",
                    "p99_over_direct",
                    "rps_over_direct",
                    "p99_concurrent_over_direct",
                    "cpu_concurrent_over_direct",
                )
            },
        },
        "bulk": {
            "size_mib": 8,
            "tunnel": {
                "download_mib_s": 1.0,
                "upload_mib_s": 1.0,
                "download_cpu_s_per_gib": cpu,
                "upload_cpu_s_per_gib": cpu,
            },
            "direct": {
                "download_mib_s": 2.0,
                "upload_mib_s": 2.0,
                "download_cpu_s_per_gib": {"server": 1.0},
                "upload_cpu_s_per_gib": {"server": 1.0},
            },
            "ratios": {"download": 0.5, "upload": 0.5},
        },
        "rss": {
            "size_mib": 32,
            **{
                k: {
                    "mib_s": 1.0,
                    **{
                        p: {"idle_rss_mib": 1.0, "peak_rss_sampled_mib": 1.0, "vmhwm_mib": 1.0, "growth_mib": 0.0}
                        for p in ("bridge", "edge")
                    },
                }
                for k in ("download", "upload")
            },
        },
        "loaded": {
            "size_mib": 32,
            "idle": {"p50_ms": 1.0, "p99_ms": 2.0},
            "loaded": {**r, "background_mib_s": 5.0, "background_transfers_completed": 1},
            "ratios": {"p50": 1.0, "p99": 1.0},
        },
        "targets": [{"name": "p50 tunnel_http/direct", "value": 2.0, "target": "<= 1.5", "met": False, "relay": None}],
    }
    text = render(res)
    assert "does not verify TLS certificates" in text
    assert "MISSED" in text
    assert "req/s, 64 concurrent" in text
    assert "8. one TLS relay" not in text  # no section 8 in these results
    assert "C relay" not in text

    res["relay"] = {"skipped": "socat is not installed (Debian package socat)"}
    assert "the C relay: not measured: socat is not installed" in render(res)

    def relayed(program: str, p50: float, down: float, up: float) -> dict[str, object]:
        """A relay's results: the direct server at 0.2 ms, 1000 and 600 MiB/s; through the relay these."""
        return {
            "program": program,
            "detail": f"{program} relay",
            "p50_ms": {"direct": 0.2, "relay": p50},
            "download_mib_s": {"direct": 1000.0, "relay": down},
            "upload_mib_s": {"direct": 600.0, "relay": up},
            "ratios": {"p50": round(p50 / 0.2, 3), "download": down / 1000, "upload": round(up / 600, 3)},
        }

    res["relay"] = relayed("socat 1.7.4.4", 0.25, 400.0, 390.0)
    res["aio_relay"] = relayed("asyncio, Python 3.11.7", 0.35, 300.0, 270.0)
    res["aio_relay"]["p99_concurrent_ms"] = {"direct": 20.0, "relay": 30.0}  # measured only through this relay
    res["aio_relay"]["cpu_ms_per_request_concurrent"] = {"direct": 0.25, "relay": 0.35}
    res["aio_relay"]["ratios"] |= {"p99": 1.5, "cpu": 1.4}
    res["targets"][0]["relay"] = 1.25
    res["targets"][0]["aio_relay"] = 1.75
    lines = render(res).splitlines()
    assert "8. one TLS relay in front of the direct server: in C, and on asyncio" in lines
    row = next(line for line in lines if line.strip().startswith("download (MiB/s)"))
    # direct, via each relay, their ratios, the tunnel's
    assert row.split()[2:] == ["1,000", "400.0", "300.0", "0.40", "0.30", "0.50"]
    row = next(line for line in lines if line.strip().startswith("CPU ms/request, 64 conc."))
    assert row.split()[5:] == ["0.250", "-", "0.350", "-", "1.40", "1.00"]  # no C relay figure: '-'
    assert any("the relay's CPU and the direct server's behind it, together" in line for line in lines)
    target = next(line for line in lines if line.strip().startswith("p50 tunnel_http/direct"))
    assert target.split()[-3:] == ["MISSED", "1.250", "1.750"]
    assert any(line.startswith("targets") and line.endswith("C relay Py relay") for line in lines)


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=y\r\nllo\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
    ],
)
def test_the_response_reader_parses_whole_and_byte_by_byte(wire: bytes) -> None:
    for step in (len(wire), 1, 7):
        reader = ResponseReader()
        for i in range(0, len(wire), step):
            reader.feed(wire[i : i + step])
        assert list(reader.done) == [(200, b"hello")], step
        assert reader.body_bytes == 5


def test_the_response_reader_counts_without_keeping_and_splits_pipelined_responses() -> None:
    reader = ResponseReader(keep_body=False)
    one = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"
    reader.feed(one + one[:20])
    reader.feed(one[20:])
    assert list(reader.done) == [(404, b""), (404, b"")]
    assert reader.body_bytes == 6
