"""``radical-edge demo``: a bridge, a local edge with every plugin that runs here, and the portal."""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import sys
from collections.abc import Collection
from pathlib import Path

import anyio

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_edge import EdgeService
from radical_edge_proto import edge_name_error
from radical_edge_tunnel import load_or_create_token

from ._devcerts import ensure_dev_tls

log = logging.getLogger("radical_edge.demo")

HOME = Path("~/.radical/edge")


def command_name() -> str:
    """How to run ``radical-edge`` from another shell: the name if that finds this installation, else its path."""
    mine = Path(sys.executable).parent / "radical-edge"
    found = shutil.which("radical-edge")
    if found is not None and mine.exists() and Path(found).resolve() == mine.resolve():
        return "radical-edge"
    return str(mine) if mine.exists() else f"{sys.executable} -m radical_edge_cli"


def snippet(url: str, ca: Path, token_file: Path, edge: str, plugins: Collection[str] = ()) -> str:
    """What to try from another shell; the command-line lines for the plugins the edge runs."""
    cli = command_name()
    lines = [
        f"export RADICAL_BRIDGE_URL={url}",
        f"export RADICAL_BRIDGE_CERT={ca}",
        f"export RADICAL_BRIDGE_TOKEN=$(cat {token_file})",
        f"{cli} ls",
    ]
    if "queue_info" in plugins:
        lines.append(f"{cli} queues {edge}")
    if "psij" in plugins:
        lines.append(f"{cli} submit {edge} --executor local --follow -- sh -c 'hostname; date'")
        lines.append(f"{cli} jobs {edge}")
    if "staging" in plugins:
        lines.append(f"{cli} put README.md {edge}:~/staged/   # then: {cli} ls {edge}:~/staged, {cli} get ...")
    lines.append(f"""{sys.executable} - <<'PY'
from radical_edge_client import BridgeClient
with BridgeClient() as bc:
    print(bc.list_edges())
    print(bc.get_edge_client("{edge}").get_plugin("sysinfo").get_metrics()["cpu"])
PY""")
    return "\n".join(lines)


async def run_demo(host: str, port: int, plugins: str, edge_name: str | None, home: Path) -> None:
    name = edge_name or socket.gethostname().split(".")[0] or "local"
    reason = edge_name_error(name)
    if reason is not None:
        raise SystemExit(f"radical-edge demo: {reason}; choose another with --name")
    home = home.expanduser()
    tls = ensure_dev_tls(home)
    token_file = home / "bridge.token"
    token = load_or_create_token(token_file)
    bridge = Bridge(BridgeConfig(host=host, port=port, cert=tls.cert, key=tls.key, token=token))
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(bridge.serve)
        except OSError as exc:
            raise SystemExit(f"radical-edge demo: cannot listen on {host}:{port}: {exc} (try --port)") from None
        url = f"https://{'localhost' if host in ('127.0.0.1', '::1', 'localhost') else host}:{bridge.port}"
        edge = EdgeService(name, url=url, token=token, ca_file=str(tls.ca), plugins=plugins)
        edge_done = anyio.Event()

        async def run_edge() -> None:
            try:
                await edge.run()
            finally:
                edge_done.set()

        tg.start_soon(run_edge)
        with anyio.fail_after(30):
            await edge.wait_connected()
        manifest = edge.host.manifest()
        enabled = sorted(p for p, entry in manifest.items() if entry.get("enabled"))
        unavailable = {p: entry.get("error") for p, entry in manifest.items() if not entry.get("enabled")}
        # Ctrl-C is ours from before the "up" message: one pressed as soon as it shows stops cleanly
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            print(
                f"radical-edge is up: a bridge and the edge {name!r}\n"
                f"  plugins: {', '.join(enabled) or 'none'}\n"
                + "".join(f"           ({p}: {why})\n" for p, why in sorted(unavailable.items()))
                + f"  portal:  {url}/   (sign in with the token)\n"
                f"  token:   {token_file}\n"
                f"  CA:      {tls.ca}\n"
                f"  stop:    Ctrl-C\n\n"
                f"Try it from another shell:\n{snippet(url, tls.ca, token_file, name, enabled)}\n",
                flush=True,
            )
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
        edge.stop()  # drains: in-flight requests finish first
        with anyio.move_on_after(10):
            await edge_done.wait()
        bridge.stop()
    print("radical-edge demo stopped", flush=True)
