"""The benchmark's results as a table for a terminal, with each target and whether it was met."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render(res: dict[str, Any]) -> str:
    m, d, o = res["machine"], res["driver"], res["options"]
    small, bulk, rss, loaded = res["small"], res["bulk"], res["rss"], res["loaded"]
    lines = [
        "radical-edge bench: loopback, TLS on every hop",
        f"  machine  {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}",
        f"  driver   HTTP load: {d['detail']}",
        f"           WebSocket: {d['websocket']}",
        f"  floor    {d['direct_server']}",
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
        row(f"p99 latency, {n} concurrent (ms)", col(conc, "p99_ms")),
        row("CPU ms/request, bridge", col(conc, "", "bridge")),
        row("CPU ms/request, edge", col(conc, "", "edge")),
        row("CPU ms/request, bridge+edge | server", col(conc, "", "bridge+edge")),
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
    for kind in ("download", "upload"):
        cpu = bulk["tunnel"][f"{kind}_cpu_s_per_gib"]
        lines.append(
            f"  CPU s/GiB {kind}: bridge {_fmt(cpu['bridge'], 2)}, edge {_fmt(cpu['edge'], 2)}; "
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
        "targets",
    ]
    for t in res["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"  {t['name']:<52}{_fmt(t['value'], 3):>9}  {t['target']:<8} {verdict}")
    return "\n".join(lines)
