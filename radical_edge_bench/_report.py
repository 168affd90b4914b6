"""The benchmark's results as a table for a terminal, with each target and whether it was met."""

from __future__ import annotations

from typing import Any

from ._staging import render as _staging  # standard library only at import, like this module


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


#: columns a target may have beside its value: the same measure for a reference measured in the same run
_REFERENCES = (
    (
        "relay",
        "C relay",
        "C relay: the same ratio through one TLS relay in C (socat) in front of the direct server (8.)",
    ),
    (
        "aio_relay",
        "Py relay",
        "Py relay: the same ratio through one TLS relay on asyncio (Protocols, no HTTP or WebSocket) (8.)",
    ),
    ("echo", "echo", "echo: a plain TCP echo server on asyncio, the same connections and heartbeat traffic (2.)"),
)


def _targets(res: dict[str, Any]) -> list[str]:
    shown = [ref for ref in _REFERENCES if any(t.get(ref[0]) is not None for t in res["targets"])]
    header = f"{'targets':<80}" + "".join(f"{label:>9}" for _, label, _ in shown)
    lines = [header if shown else "targets"]
    for t in res["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        line = f"  {t['name']:<52}{_fmt(t['value'], 3):>9}  {t['target']:<8} {verdict:<6}"
        line += "".join(f"{_fmt(t.get(key), 3) if t.get(key) is not None else '':>9}" for key, _, _ in shown)
        lines.append(line.rstrip())
    lines += [f"  {note}" for _, _, note in shown]
    return lines


def _relay(res: dict[str, Any]) -> list[str]:
    """Section 8: one TLS relay in C (``radical_edge_bench._relay``) and one on asyncio (``._aiorelay``), each in
    front of the direct server."""
    c, py = res.get("relay"), res.get("aio_relay")
    if not c and not py:
        return []
    measured = {name: r for name, r in (("C relay", c), ("Py relay", py)) if r and "skipped" not in r}
    small, bulk = res["small"]["ratios"], res["bulk"]["ratios"]
    lines = ["8. one TLS relay in front of the direct server: in C, and on asyncio"]
    if c and "skipped" in c:
        lines.append(f"  the C relay: not measured: {c['skipped']}")
    if measured:
        head = "".join(f"{name:>10}" for name in measured) + "".join(f"{name + '/dir.':>15}" for name in measured)
        lines.append(f"  {'':<32}{'direct':>8}{head}{'tunnel/dir.':>14}")
        conc = res["options"]["connections"]
        rows: list[tuple[str, str, str, Any, int]] = [
            ("p50 small GET, 1 client (ms)", "p50_ms", "p50", small.get("tunnel_http_p50_over_direct"), 3),
            ("download (MiB/s)", "download_mib_s", "download", bulk.get("download"), 1),
            ("upload (MiB/s)", "upload_mib_s", "upload", bulk.get("upload"), 1),
            (
                f"p99, {conc} conc. (ms)",
                "p99_concurrent_ms",
                "p99",
                small.get("tunnel_http_p99_concurrent_over_direct"),
                3,
            ),
            (
                f"CPU ms/request, {conc} conc. *",
                "cpu_ms_per_request_concurrent",
                "cpu",
                small.get("tunnel_http_cpu_concurrent_over_direct"),
                3,
            ),
        ]
        for label, key, ratio, tunnel, digits in rows:
            having = [r for r in measured.values() if key in r]
            if not having:
                continue
            line = f"  {label:<32}{_fmt(having[0][key]['direct'], digits):>8}"
            line += "".join(f"{_fmt(r[key]['relay'] if key in r else None, digits):>10}" for r in measured.values())
            line += "".join(f"{_fmt(r['ratios'].get(ratio), 2):>15}" for r in measured.values())
            lines.append(line + f"{_fmt(tunnel, 2):>14}")
        if any("cpu_ms_per_request_concurrent" in r for r in measured.values()):
            lines.append(
                "  * through a relay: the relay's CPU and the direct server's behind it, together (the tunnel: "
                "bridge + edge); the C relay forks a process per connection, so it has no concurrent figures"
            )
    for name, r in measured.items():
        lines.append(f"  {name} ({r['program']}): {r['detail']}")
    lines += [
        "  the tunnel's shape (a process between the client and the app's process, a second TLS termination):",
        "  in C, what the machine itself takes of each ratio; on asyncio, what Python's event loop takes with no",
        "  HTTP, WebSocket or tunnel protocol; the direct server measured again before both relays, one run each",
        "",
    ]
    return lines


def _layers(layers: dict[str, Any] | None, connections: int) -> list[str]:
    """Section 6: each layer's CPU per small request, their sum, and what the processes spent besides."""
    if not layers:
        return []
    widths = {"bridge": 9, "edge": 9, "bridge+edge": 13, "direct": 9}

    def row(label: str, values: dict[str, Any]) -> str:
        return f"  {label:<40}" + "".join(f"{_fmt(values.get(c), 1):>{w}}" for c, w in widths.items())

    lines = [
        "6. per-layer CPU per small request (µs)         bridge     edge  bridge+edge   direct",
        f"   (each layer's real code in a loop in the bench process, on the request's real messages; {layers['tls']};"
        f" WebSocket masking {layers.get('websocket_masking', '-')})",
    ]
    lines += [row(r["label"], r) for r in layers["rows"]]
    lines.append(row("sum of the layers", layers["sum_us"]))
    measured, remainder = layers.get("measured_us", {}), layers.get("remainder_us", {})
    for run, name in (("one_client", "1 client"), ("concurrent", f"{connections} concurrent")):
        if run in measured:
            lines.append(row(f"measured (/proc), {name}", measured[run]))
            lines.append(row(f"remainder *, {name}", remainder[run]))
    lines.append(f"  * {layers.get('remainder_label', 'measured total minus the layers')}")
    one = measured.get("one_client", {})
    shares = [
        f"{what} {100 * layers['sum_us'][col] / one[col]:.0f} %"
        for what, col in (("bridge+edge", "bridge+edge"), ("direct", "direct"))
        if one.get(col)
    ]
    if shares:
        lines.append("  the layers are this share of the measured CPU at 1 client: " + ", ".join(shares))
    return [*lines, ""]


def render_scale(res: dict[str, Any]) -> str:
    """The table of ``--scale N``."""
    m, s = res["machine"], res["scale"]
    n = s["edges"]
    c, r, cpu, er, snap, rs = s["connect"], s["rss"], s["idle_cpu"], s["edges_route"], s["snapshot"], s["restart"]
    echo = cpu["echo_floor"]
    sse, ws, rc = snap["sse"], snap["connect"], s["routing_check"]
    hist = rs["histogram"]
    width = hist["bin_s"]
    lines = [
        f"radical-edge bench --scale {n}: loopback, TLS on every hop",
        f"  machine  {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}",
        f"  setup    one bridge process; one load process holding {n} edges (EdgeService, WS /register, one "
        f"plugin each) and {n} SDK connections (WS /connect, no subscription), all in one event loop",
        f"  caps     {s['per_peer_cap']}",
        f"  connect  all {2 * n} connections up in {_fmt(c['seconds'], 1)} s ({c['concurrency']} dialling at once; "
        f"edges {_fmt(c['edges_seconds'], 1)} s); the bridge lists {c['edges_registered']} connected edges",
        "",
        f"1. bridge memory, {n} idle edges + {n} idle SDK connections",
        f"  RSS before any edge {_fmt(r['bridge_before_mib'], 1)} MiB, after {_fmt(r['bridge_after_mib'], 1)} MiB: "
        f"+{_fmt(r['delta_mib'], 1)} MiB",
        f"  per edge, its SDK connection included: {_fmt(r['per_edge_kib'], 1)} KiB "
        f"(per connection: {_fmt(r['per_connection_kib'], 1)} KiB); load process RSS {_fmt(r['load_mib'], 1)} MiB",
        "",
        f"2. idle CPU over {_fmt(cpu['seconds'], 1)} s (heartbeats only: an idle edge pings after "
        f"{s['idle_heartbeat_interval_s']:g} s of silence (after {s['heartbeat_interval_s']:g} s with a request in "
        f"flight), an SDK connection after {s['client_heartbeat_interval_s']:g} s, the bridge answers; % of one core)",
        f"  bridge {_fmt(cpu['bridge_pct'], 2)} %, load process {_fmt(cpu['load_pct'], 2)} %",
        f"  bridge CPU per PING/PONG exchange: {_fmt(cpu['bridge_us_per_exchange'], 0)} us"
        + (
            f"; at that cost the bridge meets <= 2 % with an idle edge heartbeat interval >= "
            f"{cpu['interval_for_target_s']:.0f} s"
            if cpu["interval_for_target_s"] is not None
            else " (too little CPU in this window to tell)"
        ),
        f"  the event loop alone (measured first, with nothing else running): {_fmt(echo['server_pct'], 2)} % of one "
        "core, "
        + (
            f"{_fmt(echo['us_per_exchange'], 0)} us per exchange"
            if echo["us_per_exchange"] is not None
            else "too few exchanges in this window to tell the cost of one"
        ),
        f"    {echo['server']};",
        f"    the same {2 * n} connections and intervals, {echo['message_bytes']} bytes (a PING's TLS record) each way "
        f"({echo['exchanges']:,} exchanges in {_fmt(echo['seconds'], 1)} s)",
        "",
        f"3. listing {n} edges",
        f"  GET /edges (keep-alive, {er['calls']} calls): p50 {_fmt(er['p50_ms'], 2)} ms, max {_fmt(er['max_ms'], 2)} "
        f"ms, {er['body_bytes']:,} bytes, {er['connected']}/{er['total']} connected",
        f"  topology snapshot, new GET /events reader: {_fmt(sse['ms'], 2)} ms after connecting "
        f"({sse['bytes']:,} bytes, {sse['edges']} edges)",
        f"  topology snapshot, new /connect subscriber: {_fmt(ws['ms'], 2)} ms after SUBSCRIBE "
        f"({ws['parts']} part(s), {ws['bytes']:,} bytes, {ws['edges']} edges; dial + handshake "
        f"{_fmt(ws['dial_ms'], 1)} ms)",
        "",
        f"4. bridge restart ({rs['signal']}, a new bridge on the same port, certificate and token)",
        f"  new bridge listening after {_fmt(rs['bridge_listening_s'], 2)} s; all {n} edges registered again after "
        f"{_fmt(rs['all_edges_back_s'], 2)} s (the new bridge's topology events; GET /healthz then "
        f"lists {rs['healthz_edges']})",
    ]
    for label, key, count in (
        ("SDK connections began to redial", "client_redial_started_s", rs["clients_back"]),
        ("edges registered at the bridge", "edge_registered_s", n),
        ("edges connected, as the edges saw it", "edge_reconnect_s", rs["edges_back"]),
        ("SDK connections back", "client_reconnect_s", rs["clients_back"]),
    ):
        sp = rs[key]
        lines.append(
            f"  {label + ' after:':<45} min {_fmt(sp['min'], 2)}, p50 {_fmt(sp['p50'], 2)}, "
            f"p90 {_fmt(sp['p90'], 2)}, max {_fmt(sp['max'], 2)} s ({count} of {n})"
        )
    edges, clients = hist["edges"], hist["clients"]
    bins = max(len(edges), len(clients))
    top = max([*edges, *clients, 1])
    lines.append(f"  back per {width:g} s after the kill          edges   SDK conns")
    for i in range(bins):
        e = edges[i] if i < len(edges) else 0
        c = clients[i] if i < len(clients) else 0
        bar = "#" * max(1 if e else 0, round(30 * e / top))
        lines.append(f"    {i * width:>5g} - {(i + 1) * width:<5g}s {e:>18} {c:>11}  {bar}")
    warnings = ", ".join(f"{k} {v}" for k, v in rs["load_warnings"].items()) or "none"
    lines += [
        f"  failed attempts meanwhile: load process redialers: {warnings}; bridge TLS handshake failures: "
        f"{_fmt(_int(rs['bridge_tls_handshake_failures']))}",
        f"  CPU meanwhile: new bridge {_fmt(rs['bridge_cpu_s_until_all_edges_back'], 2)} s until all edges were back, "
        f"load process {_fmt(rs['load_cpu_s'], 2)} s (its {2 * n} client-side handshakes in one event loop); "
        f"RSS of the new bridge {_fmt(rs['bridge_rss_after_mib'], 1)} MiB",
        f"  routing check (SDK connection -> bridge -> edge plugin): before {rc['before_restart']['ok']}"
        f"/{rc['before_restart']['of']}, after {rc['after_restart']['ok']}/{rc['after_restart']['of']} answered",
        "",
    ]
    return "\n".join(lines + _targets(res))


def render(res: dict[str, Any]) -> str:
    if "scale" in res:
        return render_scale(res)
    m, d, o = res["machine"], res["driver"], res["options"]
    small, bulk, rss, loaded = res["small"], res["bulk"], res["rss"], res["loaded"]
    lines = [
        "radical-edge bench: loopback, TLS on every hop",
        f"  machine  {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}",
        f"  driver   HTTP load: {d['detail']}",
        f"           WebSocket: {d['websocket']}",
        f"  floor    {d['direct_server']}",
        f"  masking  WebSocket masking in {m.get('masking', 'pure Python')} (bridge, edge, SDK driver)",
        f"  runs     {o['duration_s']:g} s each, {o['connections']} concurrent; bulk {o['size_mib']} MiB; "
        f"big transfer {o['big_mib']} MiB",
        "",
        "1-2. small GET (50-byte JSON)         tunnel HTTP   tunnel WS      direct   HTTP/direct  WS/direct",
    ]
    th, tw, dr = small["tunnel_http"], small["tunnel_ws"], small["direct"]

    def row(label: str, values: list[Any], ratios: tuple[Any, Any] = (None, None), digits: int = 3) -> str:
        a, b, c = values
        return (
            f"  {label:<36}{_fmt(a, digits):>11}{_fmt(b, digits):>11}{_fmt(c, digits):>12}"
            f"{_fmt(ratios[0], 2):>13}{_fmt(ratios[1], 2):>11}"
        )

    def col(run: str, key: str, cpu: str | None = None) -> list[Any]:
        """One value per column (tunnel HTTP, tunnel WS, direct) of run ``run``."""
        if cpu is None:
            return [th[run][key], tw[run][key], dr[run][key]]
        direct = "server" if cpu == "bridge+edge" else cpu
        return [
            th[run]["cpu_ms_per_request"].get(cpu),
            tw[run]["cpu_ms_per_request"].get(cpu),
            dr[run]["cpu_ms_per_request"].get(direct),
        ]

    def ratios(what: str) -> tuple[Any, Any]:
        return small["ratios"][f"tunnel_http_{what}_over_direct"], small["ratios"][f"tunnel_ws_{what}_over_direct"]

    one, conc, n = "one_client", "concurrent", o["connections"]
    lines += [
        row("p50 latency, 1 client (ms)", col(one, "p50_ms"), ratios("p50")),
        row("p99 latency, 1 client (ms)", col(one, "p99_ms"), ratios("p99")),
        row(f"req/s, {n} concurrent", col(conc, "rps"), ratios("rps"), digits=0),
        row(f"p50 latency, {n} concurrent (ms)", col(conc, "p50_ms")),
        row(f"p99 latency, {n} concurrent (ms)", col(conc, "p99_ms"), ratios("p99_concurrent")),
        row("CPU ms/request, bridge", col(conc, "", "bridge")),
        row("CPU ms/request, edge", col(conc, "", "edge")),
        row("CPU ms/request, bridge+edge | server", col(conc, "", "bridge+edge"), ratios("cpu_concurrent")),
        row("CPU ms/request, load driver (Python)", col(conc, "", "client")),
        row("CPU ms/request bridge+edge, 1 client", col(one, "", "bridge+edge")),
        row(
            "requests / errors (concurrent run)",
            [f"{x[conc]['requests']}/{x[conc]['errors']}" for x in (th, tw, dr)],
        ),
        "  RSS of bridge / edge before and after these "
        + f"{small['requests_total']} tunnel requests (MiB): "
        + ", ".join(f"{n} {m['before']:.1f} -> {m['after']:.1f}" for n, m in small["rss_mib"].items()),
        "",
        f"3. bulk, {bulk['size_mib']} MiB (MiB/s)                tunnel      direct   tunnel/direct",
    ]
    for kind in ("download", "upload"):
        lines.append(
            f"  {kind:<36}{_fmt(bulk['tunnel'][f'{kind}_mib_s'], 1):>11}{_fmt(bulk['direct'][f'{kind}_mib_s'], 1):>12}"
            f"{_fmt(bulk['ratios'][kind], 2):>16}"
        )
    pure = bulk.get("tunnel_pure")
    if pure is not None:  # the same through a bridge and an edge without the accelerators
        for kind in ("download", "upload"):
            lines.append(
                f"  {kind + ', pure Python':<36}{_fmt(pure[f'{kind}_mib_s'], 1):>11}"
                f"{_fmt(bulk['direct'][f'{kind}_mib_s'], 1):>12}{_fmt(bulk['ratios'][f'{kind}_pure'], 2):>16}"
            )
    for kind in ("download", "upload"):
        for label, run in (("", bulk["tunnel"]), (" (pure Python)", pure)):
            if run is None:
                continue
            cpu = run[f"{kind}_cpu_s_per_gib"]
            lines.append(
                f"  CPU s/GiB {kind}{label}: bridge {_fmt(cpu['bridge'], 2)}, edge {_fmt(cpu['edge'], 2)}; "
                f"direct server {_fmt(bulk['direct'][f'{kind}_cpu_s_per_gib']['server'], 2)}"
            )
    lines += ["", f"4. RSS during a {rss['size_mib']} MiB transfer (MiB)   idle   peak(sampled)  VmHWM  growth"]
    for kind in ("download", "upload"):
        for proc in ("bridge", "edge"):
            e = rss[kind][proc]
            lines.append(
                f"  {proc + ', ' + kind + ' at ' + _fmt(rss[kind]['mib_s'], 1) + ' MiB/s':<36}"
                f"{_fmt(e['idle_rss_mib'], 1):>7}{_fmt(e['peak_rss_sampled_mib'], 1):>15}"
                f"{_fmt(e['vmhwm_mib'], 1):>7}{_fmt(e['growth_mib'], 1):>8}"
            )
    ld = loaded["loaded"]
    lines += [
        "",
        f"5. small GET, 1 client, while {loaded['size_mib']} MiB downloads run     idle     loaded   loaded/idle",
        f"  {'p50 (ms)':<48}{_fmt(loaded['idle']['p50_ms']):>7}{_fmt(ld['p50_ms']):>11}"
        f"{_fmt(loaded['ratios']['p50'], 2):>14}",
        f"  {'p99 (ms)':<48}{_fmt(loaded['idle']['p99_ms']):>7}{_fmt(ld['p99_ms']):>11}"
        f"{_fmt(loaded['ratios']['p99'], 2):>14}",
        f"  background download ran at {_fmt(ld['background_mib_s'], 1)} MiB/s "
        f"({ld['requests']} small requests, {ld['errors']} errors)",
        "",
    ]
    return "\n".join(lines + _layers(res.get("layers"), o["connections"]) + _staging(res) + _relay(res) + _targets(res))
