"""The job of a child edge: ``python -m radical_edge_plugins.psij._launch CONFIG.json``.

The psij plugin's ``submit_tunneled`` writes ``CONFIG.json`` (mode 0600, no secret in it: the token
stays in a token file) and submits this module as the job's executable, run by the parent edge's own
Python, so no shell ever parses anything.  It starts the edge service
``python -m radical_edge_edge --url URL --name PARENT.N --plugins ... --token-file FILE --ready-file FILE``
which writes the ready file once the bridge accepted it (the parent reports the child ``active`` then).

With ``tunnel.via`` (compute nodes without outbound network) it first opens
``ssh -N -L 127.0.0.1:PORT:BRIDGE_HOST:BRIDGE_PORT VIA`` (``BatchMode=yes``,
``ExitOnForwardFailure=yes``, a free ``PORT`` picked here) and the edge dials ``127.0.0.1:PORT`` while
verifying the bridge's certificate for ``BRIDGE_HOST`` (``--tls-server-name``).  The edge and ssh
stop together: a signal to this process (scancel, the local executor's cancel) is passed on to the
edge, ssh is ended after it; if ssh dies, the edge is stopped and the job fails with ssh's words.

Exit status: the edge's, or 3 when the forward cannot be opened.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: these would override the explicit options of the child (the token above all): never passed on
_BRIDGE_ENV = ("RADICAL_BRIDGE_TOKEN", "RADICAL_BRIDGE_URL", "RADICAL_BRIDGE_CERT")
FORWARD_FAILED = 3


def say(text: str) -> None:
    print(f"radical-edge child: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def edge_argv(config: dict[str, Any], url: str, server_name: str | None) -> list[str]:
    argv = [sys.executable, "-m", "radical_edge_edge", "--url", url, "--name", config["name"]]
    argv += ["--plugins", config["plugins"], "--token-file", config["token_file"]]
    argv += ["--ready-file", config["ready_file"]]
    if config.get("cert"):
        argv += ["--cert", config["cert"]]
    if server_name:
        argv += ["--tls-server-name", server_name]
    return argv


def _forward_spec(port: int, host: str, bridge_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"127.0.0.1:{port}:{shown}:{bridge_port}"


def open_forward(via: str, options: list[str], host: str, bridge_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start ssh with the local forward; return it and the local port once the port accepts connections."""
    last = "ssh did not start"
    for _attempt in range(3):
        port = free_port()
        argv = ["ssh", "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
        argv += ["-o", "ServerAliveInterval=30", *options, "-L", _forward_spec(port, host, bridge_port), via]
        say(f"opening the SSH forward: {' '.join(argv)}")
        ssh = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code = ssh.poll()
            if code is not None:
                last = f"ssh exited with status {code} (its message is above)"
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return ssh, port
            except OSError:
                time.sleep(0.1)
        else:
            ssh.terminate()
            last = "the forward did not open within 60 s"
    raise RuntimeError(last)


def run_with_forward(config: dict[str, Any], env: dict[str, str]) -> int:
    tunnel = config["tunnel"]
    parts = urlsplit(config["url"])
    host = parts.hostname or ""
    secure = parts.scheme in ("https", "wss")
    bridge_port = parts.port or (443 if secure else 80)
    try:
        ssh, port = open_forward(tunnel["via"], list(tunnel.get("ssh_options") or []), host, bridge_port)
    except (RuntimeError, OSError) as exc:
        say(f"cannot open the SSH forward through {tunnel['via']}: {exc}")
        return FORWARD_FAILED
    url = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))
    argv = edge_argv(config, url, (config.get("tls_server_name") or host) if secure else None)
    say(f"starting edge {config['name']} through the forward: {url} (TLS verified for {host})")
    edge = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)

    def pass_on(signum: int, _frame: object) -> None:
        if edge.poll() is None:
            edge.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    try:
        while True:
            code = edge.poll()
            if code is not None:
                return code
            if ssh.poll() is not None:
                say(f"the SSH forward ended (ssh status {ssh.returncode}): stopping the edge")
                edge.terminate()
                try:
                    edge.wait(35)
                except subprocess.TimeoutExpired:
                    edge.kill()
                return FORWARD_FAILED
            time.sleep(0.2)
    finally:
        if ssh.poll() is None:
            ssh.terminate()
            try:
                ssh.wait(5)
            except subprocess.TimeoutExpired:
                ssh.kill()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        say("usage: python -m radical_edge_plugins.psij._launch CONFIG.json")
        return 2
    config = json.loads(Path(args[0]).read_text())
    env = {k: v for k, v in os.environ.items() if k not in _BRIDGE_ENV}
    if config.get("tunnel"):
        return run_with_forward(config, env)
    argv_ = edge_argv(config, config["url"], config.get("tls_server_name"))
    say(f"starting edge {config['name']}: {config['url']}")
    os.execve(sys.executable, argv_, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
