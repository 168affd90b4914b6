"""The portal's browser tests: a live bridge + edge over TLS, light edges, and Debian's Chromium via Playwright.

* :class:`LiveSystem` runs a real bridge (TLS with a trustme certificate, a token) in this process, on an
  event loop in a thread of its own (Playwright's sync API owns the test's thread), with a TCP proxy in
  front of it whose connections can be cut (a network drop), and a real edge service as a subprocess
  (``python -m radical_edge_edge``: sysinfo, psij, queue_info, rhapsody, staging) with ``HOME`` in a
  temporary directory, so psij's output and staging's files never touch ``~/.radical``.
* :class:`FakeEdge` is an edge made of the tunnel package alone: a name, a manifest, a few JSON routes and
  notifications.  The tests connect hundreds of them, drop them and bring them back.
* The browser is ``/usr/bin/chromium`` (``RADICAL_EDGE_CHROMIUM`` for another path), headless, with the flags
  ``../shared/tools/README.md`` lists.  It trusts the test certificate precisely: its SPKI hash goes in
  ``--ignore-certificate-errors-spki-list`` (every other certificate error still fails), and contexts are
  made with ``ignore_https_errors=False``.

Without Chromium or Playwright the browser tests **skip** with the reason; with
``RADICAL_EDGE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it once chromium is installed) they **fail** instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import pytest
import trustme
from anyio.from_thread import BlockingPortal, start_blocking_portal
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_proto import Connection, PeerRole, Side
from radical_edge_tunnel import Tunnel, TunnelStream, client_ssl_context, connect_handshake, connect_websocket

from .client_helpers import CuttableProxy

#: set to 1 (CI does once chromium is installed) to turn "no browser here" from a skip into a failure
REQUIRE_ENV = "RADICAL_EDGE_REQUIRE_BROWSER"
CHROMIUM = os.environ.get("RADICAL_EDGE_CHROMIUM", "/usr/bin/chromium")
#: the flags that work on this kind of machine (../shared/tools/README.md): no sandbox (root in a container),
#: no GPU, and no background traffic to outside hosts, which this network refuses
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "portal-test-token-0123456789"
#: screenshots of the main pages (tests/artifacts/ is ignored by git)
ARTIFACTS = Path(__file__).parent / "artifacts"
#: the real edge's name
EDGE = "hpc"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright; it is in the test extra)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium; RADICAL_EDGE_CHROMIUM names another)"
    return None


def require_browser() -> None:
    """Skip (or, under ``RADICAL_EDGE_REQUIRE_BROWSER=1``, fail) when Chromium or Playwright is missing."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


def spki_sha256(cert_pem: bytes) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what Chromium's ``--ignore-certificate-errors-spki-list`` takes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- an edge made of the tunnel package alone

Routes = Callable[[str, str, bytes], tuple[int, Any]]


def manifest(*plugins: str, **ui: dict[str, Any]) -> dict[str, Any]:
    """A manifest listing ``plugins`` (their type is their name); ``ui[name]`` is that plugin's ui_config."""
    return {
        p: {"type": p, "version": "0.1.0", "enabled": True, "ui_config": ui.get(p, {"title": p}), "error": None}
        for p in plugins
    }


class FakeEdge:
    """A light edge: ``routes(method, path, body) -> (status, json)`` answers its requests."""

    def __init__(self, system: LiveSystem, name: str, manifest: dict[str, Any], routes: Routes | None = None) -> None:
        self.system = system
        self.name = name
        self.manifest = manifest
        self.routes = routes or (lambda method, path, body: (404, {"error": True, "status_code": 404, "detail": path}))
        self.tunnel: Tunnel | None = None
        self.resume_token: str | None = None
        self.seq = 0
        self.running: Any = None

    async def dial(self) -> None:
        system = self.system
        carrier = await connect_websocket(
            f"wss://127.0.0.1:{system.bridge_port}/register", token=TOKEN, ssl_context=system.client_ssl
        )
        conn = Connection(Side.CONNECTOR)
        try:
            welcome = await connect_handshake(
                conn,
                carrier,
                role=PeerRole.EDGE,
                name=self.name,
                credential=TOKEN,
                resume_token=self.resume_token,
                manifest=self.manifest,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await carrier.aclose()
            raise
        self.resume_token = welcome.resume_token
        self.tunnel = Tunnel(conn, carrier, handler=self._handle, name=self.name)

    async def _handle(self, stream: TunnelStream) -> None:
        request = stream.request
        assert request is not None
        body = bytearray()
        async for chunk in stream:
            body += chunk
        status, answer = self.routes(request.method, request.path, bytes(body))
        # bytes are sent as a page (text/html), anything else as JSON
        kind = "text/html; charset=utf-8" if isinstance(answer, bytes) else "application/json"
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        await stream.respond(status, [("content-type", kind), ("content-length", str(len(raw)))])
        await stream.send(raw, end_stream=True)

    async def _run(self) -> None:
        assert self.tunnel is not None
        with contextlib.suppress(Exception):
            await self.tunnel.run()

    def start(self) -> None:
        """Serve the dialled tunnel (on the system's event loop)."""
        self.running = self.system.portal.start_task_soon(self._run)

    def connect(self) -> FakeEdge:
        self.system.portal.call(self.dial)
        self.start()
        self.system.wait_connected(self.name)
        return self

    def drop(self) -> None:
        """The connection breaks (no goodbye): the bridge marks the edge disconnected."""
        tunnel = self.tunnel
        assert tunnel is not None
        self.system.portal.call(tunnel.carrier.aclose)
        self.system.wait_connected(self.name, False)

    def notify(self, plugin: str, topic: str, data: Any) -> None:
        tunnel = self.tunnel
        assert tunnel is not None
        self.seq += 1
        self.system.portal.call(tunnel.send_event, self.name, plugin, topic, self.seq, json.dumps(data).encode())

    async def aclose(self) -> None:
        if self.tunnel is not None:
            with contextlib.suppress(Exception):
                await self.tunnel.carrier.aclose()


# ---------------------------------------------------------------- the live system


class LiveSystem:
    """A bridge (in this process, its own event loop thread), a proxy in front of it, and the edge ``hpc``."""

    def __init__(self, work: Path, *, real_edge: bool = True, tls_from: LiveSystem | None = None) -> None:
        """``tls_from``: serve that system's certificate (the one a browser was told to trust)."""
        self.work = work
        self.real_edge = real_edge
        self.home = work / "home"
        self.home.mkdir()
        if tls_from is not None:
            self.cert, self.key, self.ca_file, self.spki = tls_from.cert, tls_from.key, tls_from.ca_file, tls_from.spki
        else:
            ca = trustme.CA()
            issued = ca.issue_cert("127.0.0.1", "localhost")
            self.cert, self.key, self.ca_file = work / "cert.pem", work / "key.pem", work / "ca.pem"
            issued.private_key_and_cert_chain_pem.write_to_path(str(self.cert))
            issued.private_key_pem.write_to_path(str(self.key))
            self.key.chmod(0o600)
            ca.cert_pem.write_to_path(str(self.ca_file))
            self.spki = spki_sha256(issued.cert_chain_pems[0].bytes())
        self.token_file = work / "bridge.token"
        self.token_file.write_text(TOKEN)
        self.token_file.chmod(0o600)
        self.client_ssl = client_ssl_context(str(self.ca_file))
        self.fakes: dict[str, FakeEdge] = {}
        self.edge_proc: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal
        self.bridge: Bridge
        self.proxy: CuttableProxy

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> LiveSystem:
        try:
            self.portal = self._stack.enter_context(start_blocking_portal("asyncio"))
            self._stack.callback(self.portal.call, self.portal.stop, True)
            self.start_bridge()
            self.proxy = CuttableProxy(self.bridge_port)
            self.portal.start_task(self.proxy.serve)
            if self.real_edge:
                self.start_edge()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_edge()
        with contextlib.suppress(Exception):
            for fake in list(self.fakes.values()):
                self.portal.call(fake.aclose)
        with contextlib.suppress(Exception):
            self.portal.call(self.bridge.stop)
        self._stack.close()

    def start_bridge(self) -> None:
        config = BridgeConfig(
            host="127.0.0.1",
            port=0,
            cert=self.cert,
            key=self.key,
            token=TOKEN,
            request_timeout=30,
            heartbeat_interval=5,
        )
        self.bridge = Bridge(config)
        self.serving, _ = self.portal.start_task(self.bridge.serve)

    @property
    def bridge_port(self) -> int:
        assert self.bridge.port is not None
        return self.bridge.port

    @property
    def url(self) -> str:
        """The portal, straight at the bridge."""
        return f"https://127.0.0.1:{self.bridge_port}"

    @property
    def proxied_url(self) -> str:
        """The portal through the proxy (:meth:`cut` drops its connections)."""
        return f"https://127.0.0.1:{self.proxy.port}"

    def cut(self) -> None:
        self.portal.call(self.proxy.cut)

    def restore(self) -> None:
        self.portal.call(self.proxy.restore)

    def start_edge(self) -> None:
        """``python -m radical_edge_edge`` with the built-in plugins, HOME in the test's directory."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RADICAL_BRIDGE_TOKEN")}
        env["HOME"] = str(self.home)
        ready = self.work / "edge.ready"
        cmd = [sys.executable, "-m", "radical_edge_edge", "--name", EDGE, "--url", self.url]
        cmd += ["--cert", str(self.ca_file), "--token-file", str(self.token_file), "--ready-file", str(ready)]
        cmd += ["--plugins", "all", "--log-level", "WARNING"]
        self.edge_log = (self.work / "edge.log").open("wb")
        proc = subprocess.Popen(cmd, env=env, cwd=self.work, stdout=self.edge_log, stderr=subprocess.STDOUT)
        self.edge_proc = proc
        try:
            wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the edge to register")
        finally:
            if not ready.exists():
                self.stop_edge()
                raise AssertionError(f"the edge did not start:\n{(self.work / 'edge.log').read_text()}")
        self.wait_connected(EDGE)

    def stop_edge(self) -> None:
        proc = self.edge_proc
        self.edge_proc = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.edge_log.close()

    # ------------------------------------------------------------ edges

    def connected(self, name: str) -> bool:
        entry = self.bridge.registry.get(name)
        return entry is not None and entry.connected

    def wait_connected(self, name: str, connected: bool = True, timeout: float = 15) -> None:
        wait_for(lambda: self.connected(name) == connected, timeout, f"edge {name} connected={connected}")

    def add_edge(self, name: str, plugins: dict[str, Any] | None = None, routes: Routes | None = None) -> FakeEdge:
        fake = FakeEdge(self, name, plugins if plugins is not None else manifest("echo"), routes)
        self.fakes[name] = fake
        return fake.connect()

    def add_edges(self, names: list[str], plugins: dict[str, Any] | None = None) -> list[FakeEdge]:
        """Connect many light edges at once (16 handshakes at a time)."""
        fakes = [FakeEdge(self, n, plugins if plugins is not None else manifest("echo")) for n in names]

        async def dial_all() -> None:
            limiter = anyio.Semaphore(16)

            async def one(fake: FakeEdge) -> None:
                async with limiter:
                    await fake.dial()

            async with anyio.create_task_group() as tg:
                for fake in fakes:
                    tg.start_soon(one, fake)

        self.portal.call(dial_all)
        for fake in fakes:
            fake.start()
            self.fakes[fake.name] = fake
        wait_for(lambda: all(self.connected(f.name) for f in fakes), 30, f"{len(fakes)} edges to connect")
        return fakes


def shot(page: Any, name: str, *, top: bool = True) -> Path:
    """Save a screenshot of ``page`` as tests/artifacts/NAME.png (``top``: the page scrolled to its top; the
    portal scrolls inside its main area, so a "full page" screenshot would show no more)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if top:
        page.evaluate("() => document.querySelector('main')?.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    return path


__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "EDGE",
    "REQUIRE_ENV",
    "TOKEN",
    "FakeEdge",
    "LiveSystem",
    "browser_missing",
    "manifest",
    "require_browser",
    "shot",
    "spki_sha256",
    "wait_for",
]
