"""The Explorer portal in a real browser: headless Chromium (Debian's) driven by Playwright, against a live
bridge and edge over TLS (tests/portal_helpers.py).  Skips without Chromium or Playwright, unless
``RADICAL_EDGE_REQUIRE_BROWSER=1``.  Screenshots of the main pages go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil
import pytest

from radical_edge_tunnel import HandshakeError

from .portal_helpers import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    EDGE,
    TOKEN,
    FakeEdge,
    LiveSystem,
    manifest,
    require_browser,
    shot,
    wait_for,
)

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    require_browser()
    with LiveSystem(tmp_path_factory.mktemp("portal")) as system:
        yield system


@pytest.fixture(scope="module")
def browser(live: LiveSystem) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only where the browser tests run

    with sync_playwright() as p:
        # trust exactly the test certificate (its SPKI hash); any other certificate error still fails
        args = [*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={live.spki}"]
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh browser context and page; records page errors and dialogs (an alert is an XSS)."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, ignore_https_errors=False)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    try:
        yield p
    finally:
        p.close()
    assert not p.errors, f"JavaScript errors on the page: {p.errors}"
    assert not p.dialogs, f"dialogs opened (script injection?): {p.dialogs}"


def login(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector(f'li.edge[data-edge="{EDGE}"]')
    page.wait_for_selector(".conn-live")


def go(page: Any, hash_: str) -> None:
    page.evaluate("h => { location.hash = h; }", hash_)


def edge_row(page: Any, name: str) -> Any:
    return page.locator(f'li.edge[data-edge="{name}"]')


# ---------------------------------------------------------------- sign-in


def test_a_wrong_token_shows_the_error_and_the_token_is_never_stored(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    page.goto(live.url + "/")
    page.wait_for_selector("#token")
    assert page.locator(".login-error").is_hidden()
    shot(page, "login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    error = page.locator(".login-error")
    error.wait_for(state="visible")
    assert "Wrong token" in error.inner_text()
    assert "401" in error.inner_text()
    assert page.locator(".edge-tree").count() == 0
    shot(page, "login-wrong-token")

    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector(f'li.edge[data-edge="{EDGE}"]')
    # the token lives only in the HttpOnly cookie: not in storage, not readable by scripts
    stored = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])"
    )
    assert TOKEN not in stored
    (cookie,) = [c for c in tab.context.cookies() if c["name"] == "radical_edge_token"]
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert cookie["sameSite"] == "Strict"
    # a reload keeps the sign-in (the cookie), without asking again
    page.reload()
    page.wait_for_selector(f'li.edge[data-edge="{EDGE}"]')
    assert page.locator("#token").count() == 0
    # signing out clears the cookie: the form again, and again after a reload
    page.click("button.signout")
    page.wait_for_selector("#token")
    assert not [c for c in tab.context.cookies() if c["name"] == "radical_edge_token"]
    page.reload()
    page.wait_for_selector("#token")


def test_the_first_load_asks_without_a_401(live: LiveSystem, tab: Page) -> None:
    """A new visitor's first page load asks GET /auth: the browser's console shows no failed request."""
    page = tab.page
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(live.url + "/")
    page.wait_for_selector("#token")
    assert failed == []


# ---------------------------------------------------------------- topology


def test_the_tree_nests_dotted_names_and_lists_each_edges_plugins(live: LiveSystem, tab: Page) -> None:
    child = live.add_edge(f"{EDGE}.1", manifest("sysinfo"))
    try:
        page = tab.page
        login(page, live.url)
        nested = page.locator(f'li.edge[data-edge="{EDGE}"] > ul.children > li.edge[data-edge="{EDGE}.1"]')
        nested.wait_for()
        assert "connected" in nested.locator(".edge-state").inner_text()
        go(page, f"#/e/{EDGE}")
        page.wait_for_selector(".plugin-card")
        titles = page.locator(".plugin-card-title").all_inner_texts()
        assert {"System Info", "PSI/J Jobs", "File Staging"} <= set(titles), titles
        # the selected edge shows its plugins in the tree too
        assert "System Info" in edge_row(page, EDGE).locator(":scope > .plugin-list").inner_text()
        assert page.locator(".child-edges").inner_text().startswith(f"{EDGE}.1")
        shot(page, "edge")
        go(page, "#/")
        page.wait_for_selector("text=Getting started")
        shot(page, "overview")
    finally:
        live.portal.call(child.aclose)


# ---------------------------------------------------------------- sysinfo


def test_sysinfo_shows_the_nodes_real_values_and_live_plots(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/sysinfo")
    host = page.locator("dl.facts dt:text-is('Host') + dd")
    host.wait_for()
    wait_for(lambda: host.inner_text() == socket.gethostname(), 10, "the host name")
    cores = page.locator("dl.facts dt:text-is('Cores') + dd").inner_text()
    assert f"{psutil.cpu_count(logical=True)} logical" in cores
    total = page.locator("dl.facts dt:text-is('Total') + dd").inner_text()
    gib = psutil.virtual_memory().total / 2**30
    assert total.endswith("GiB"), total
    assert abs(float(total.split()[0]) - gib) < 0.2, total
    assert page.locator("table.data td.mono", has_text="/").count() >= 1  # the root file system
    # the plots grow by one sample every few seconds
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plot-line')]"
        ".every(l => l.getAttribute('points').split(' ').length >= 2)",
        timeout=15000,
    )
    shot(page, "sysinfo")


# ---------------------------------------------------------------- psij


def test_a_local_job_goes_to_done_and_its_output_appears_without_reloading(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/psij")
    page.wait_for_selector("select[name=executor] option[value=local]", state="attached")
    page.evaluate("() => { window.__sameDocument = true; }")
    page.select_option("select[name=executor]", "local")
    page.fill("input[name=executable]", "/bin/sh")
    page.fill("input[name=arguments]", "-c 'echo first-line; sleep 3; echo to-stderr >&2; echo last-line'")
    page.fill("input[name=name]", "portal-test")
    page.click("button:text('Submit job')")
    stdout = page.locator("pre.output.stdout")
    # the first line arrives while the job still runs: streamed, not read at the end
    page.wait_for_function(
        "() => (document.querySelector('pre.output.stdout') || {}).textContent?.includes('first-line')", timeout=20000
    )
    state = page.locator(".card-head .badge").first
    assert state.inner_text() in ("PENDING", "RUNNING"), state.inner_text()
    shot(page, "psij-job-running")
    page.wait_for_selector(".card-head .badge.state-done", timeout=30000)
    page.wait_for_function(
        "() => document.querySelector('pre.output.stdout').textContent.includes('last-line')", timeout=10000
    )
    assert stdout.text_content() == "first-line\nlast-line\n"
    assert page.locator("pre.output.stderr").text_content() == "to-stderr\n"
    assert page.locator("dl.facts dt:text-is('Exit code') + dd").inner_text() == "0"
    assert page.evaluate("() => window.__sameDocument === true")  # never reloaded
    shot(page, "psij-job")
    page.click("text=← All jobs")
    row = page.locator("table.data tbody tr", has_text="portal-test")
    row.wait_for()
    assert row.locator(".badge").inner_text() == "DONE"
    shot(page, "psij-jobs")


def test_a_running_job_is_cancelled_after_a_confirmation(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/psij")
    page.wait_for_selector("select[name=executor] option[value=local]", state="attached")
    page.select_option("select[name=executor]", "local")
    page.fill("input[name=executable]", "/bin/sleep")
    page.fill("input[name=arguments]", "60")
    page.click("button:text('Submit job')")
    page.wait_for_selector(".card-head .badge.state-running", timeout=20000)
    page.click("button:text('Cancel job…')")
    page.locator("dialog.confirm button:text('Cancel job')").click()
    page.wait_for_selector(".card-head .badge.state-cancelled", timeout=20000)
    assert page.locator("button:text('Cancel job…')").is_hidden()


def test_the_submit_form_offers_queue_infos_partitions_and_accounts(live: LiveSystem, tab: Page, slurm: Any) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/queue_info")
    page.wait_for_selector("section.partitions table.data tbody tr")
    partitions = page.locator("section.partitions table.data tbody tr td:first-child").all_inner_texts()
    assert any(p.startswith("debug") for p in partitions), partitions
    shot(page, "queue-info")
    go(page, f"#/e/{EDGE}/psij")
    page.wait_for_selector("select[name=queue] option[value=debug]", state="attached", timeout=15000)


# ---------------------------------------------------------------- staging


def test_upload_by_drag_and_drop_with_progress_and_download(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/staging")
    page.wait_for_selector(".dropzone")
    page.wait_for_function("() => document.querySelector('.path-bar input').value.length > 0")
    assert page.locator(".path-bar input").input_value() == str(live.home)
    content = os.urandom(300_000)
    data = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.bin', { type: 'application/octet-stream' }));
            return dt;
        }""",
        __import__("base64").b64encode(content).decode(),
    )
    page.dispatch_event(".dropzone", "dragover", {"dataTransfer": data})
    page.dispatch_event(".dropzone", "drop", {"dataTransfer": data})
    row = page.locator('.upload-row[data-file="dropped.bin"]')
    row.wait_for()
    page.wait_for_selector('.upload-row.done[data-file="dropped.bin"]', timeout=20000)
    assert row.locator("progress").get_attribute("value") == row.locator("progress").get_attribute("max")
    assert (live.home / "dropped.bin").read_bytes() == content
    link = page.locator('table.data a[download="dropped.bin"]').first
    link.wait_for()
    shot(page, "staging")
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == content
    # browse: a new folder, into it, and back up
    page.fill("input[aria-label='New folder name']", "results")
    page.click("button:text('New folder')")
    page.locator("table.data a", has_text="results").click()
    page.wait_for_function("p => document.querySelector('.path-bar input').value === p", arg=str(live.home / "results"))
    page.locator("p.empty", has_text="This directory is empty.").wait_for()
    page.click("button:text('Up')")
    page.locator("table.data a", has_text="dropped.bin").wait_for()
    assert (live.home / "results").is_dir()


# ---------------------------------------------------------------- live topology


def test_an_edge_that_disconnects_turns_grey_and_comes_back(live: LiveSystem, tab: Page) -> None:
    flaky = live.add_edge("flaky", manifest("echo"))
    page = tab.page
    login(page, live.url)
    row = edge_row(page, "flaky")
    row.wait_for()
    assert "is-connected" in (row.get_attribute("class") or "")
    page.evaluate("() => { document.querySelector('li.edge[data-edge=\"flaky\"]').__mark = 'same node'; }")
    flaky.drop()
    page.wait_for_selector('li.edge.is-disconnected[data-edge="flaky"]', timeout=10000)
    assert row.locator(".edge-state").first.inner_text() == "disconnected"  # said in words, not colour only
    grey = row.locator(".dot").first.evaluate("d => getComputedStyle(d).backgroundColor")
    shot(page, "edge-disconnected")
    flaky.connect()
    page.wait_for_selector('li.edge.is-connected[data-edge="flaky"]', timeout=10000)
    assert row.locator(".edge-state").first.inner_text() == "connected"
    assert row.locator(".dot").first.evaluate("d => getComputedStyle(d).backgroundColor") != grey
    assert page.evaluate("() => document.querySelector('li.edge[data-edge=\"flaky\"]').__mark") == "same node"


def test_the_event_stream_reconnects_with_last_event_id_and_shows_when_offline(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r) if "/events" in r.url else None)
    login(page, live.proxied_url)
    live.cut()  # the network drops: the event stream ends, new connections are refused
    page.wait_for_selector(".conn-offline", timeout=15000)
    assert "Offline" in page.locator(".conn").inner_text()
    shot(page, "offline")
    away = live.add_edge("while-away", manifest("echo"))  # a change the page misses while offline
    try:
        live.restore()
        page.wait_for_selector(".conn-live", timeout=20000)
        edge_row(page, "while-away").wait_for(timeout=10000)
        resumed = [r for r in requests[1:] if r.all_headers().get("last-event-id") or "last_event_id=" in r.url]
        assert resumed, [(r.url, r.all_headers()) for r in requests]
    finally:
        live.portal.call(away.aclose)


# ---------------------------------------------------------------- untrusted text stays text


def test_names_from_the_network_render_as_text(live: LiveSystem, tab: Page) -> None:
    # the bridge refuses such an edge name at the handshake...
    with pytest.raises(HandshakeError):
        FakeEdge(live, XSS, manifest("echo")).connect()
    # ...and so it does a plugin name that is not one plain URL segment...
    hostile = manifest(XSS, **{XSS: {"title": "<script>window.__xss = 1</script>", "description": XSS}})
    with pytest.raises(HandshakeError):
        FakeEdge(live, "evil-name", hostile).connect()
    # ...but plugin types, titles and descriptions come from the edge as they are
    gizmo = manifest("gizmo", gizmo={"title": "<script>window.__xss = 1</script>", "description": XSS})
    gizmo["gizmo"]["type"] = XSS
    evil = live.add_edge("evil", gizmo)
    try:
        page = tab.page
        login(page, live.url)
        go(page, "#/e/evil")
        card = page.locator(".plugin-card")
        card.wait_for()
        assert "<script>window.__xss = 1</script>" in card.inner_text()
        assert XSS in card.inner_text()
        go(page, "#/e/evil/gizmo")
        page.locator("h1.page-title", has_text="<script>").wait_for()
        assert page.evaluate("() => window.__xss") is None
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("main script").count() == 0
    finally:
        live.portal.call(evil.aclose)

    # and an edge named like that (from a bridge that would let it through) shows as that text
    page = tab.page
    snapshot = {
        "topic": "topology",
        "data": {
            "bridge": {"url": live.url},
            "edges": {XSS: {"endpoint": {"connected": True, "connected_since": time.time()}, "plugins": hostile}},
        },
    }
    body = f"id: 1\ndata: {json.dumps(snapshot)}\n\n"
    page.route(
        lambda url: urlsplit(url).path == "/events",
        lambda route: route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body),
    )
    page.goto("about:blank")
    page.goto(live.url + "/")
    row = page.locator("li.edge .edge-link", has_text=XSS)
    row.wait_for()
    assert row.inner_text() == XSS
    row.click()
    page.wait_for_selector("h1.page-title .edge-title")
    assert page.locator("h1.page-title .edge-title").inner_text() == XSS
    assert page.locator("img[src=x]").count() == 0
    shot(page, "hostile-names")


#: routes of the bridge and of another edge a hostile plugin would like the signed-in browser to call
STEERED = ("/bridge/terminate", f"/edge/disconnect/{EDGE}", f"/{EDGE}/sysinfo/homedir")


def trap_steered(page: Any) -> list[str]:
    """Requests the page makes to :data:`STEERED` routes, answered here (never reaching the bridge)."""
    hits: list[str] = []

    def answer(route: Any) -> None:
        hits.append(f"{route.request.method} {urlsplit(route.request.url).path}")
        route.fulfill(status=200, headers={"content-type": "application/json"}, body="{}")

    page.route(lambda url: urlsplit(url).path in STEERED, answer)
    return hits


def test_a_hostile_plugin_cannot_point_the_browser_at_other_routes(live: LiveSystem, tab: Page) -> None:
    """A plugin's paths (its session id, its ui_config's routes) stay under /{edge}/{plugin}/: a session id
    like ``../../../bridge/terminate`` or a ui_config route like ``../../edge/disconnect/hpc`` (or the same
    with ``%2e%2e`` or backslashes) never makes the browser call the bridge's or another edge's routes with
    the user's cookie."""
    escape = "../../../bridge/terminate"

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path.split("?", maxsplit=1)[0].endswith("/register_session"):
            return 200, {"sid": escape}
        return 200, {}

    ui = {
        "title": "Gadget",
        "monitors": [
            {"id": "plain", "title": "Plain", "auto_load": f"../../{EDGE}/sysinfo/homedir"},
            {"id": "encoded", "title": "Encoded", "auto_load": f"%2e%2e/%2E%2E/{EDGE}/sysinfo/homedir"},
            {"id": "backslash", "title": "Backslash", "auto_load": f"..\\..\\{EDGE}\\sysinfo\\homedir"},
            {"id": "deeper", "title": "Deeper", "auto_load": "a/../../../../bridge/terminate"},
        ],
        "forms": [
            {
                "title": "Harmless",
                "fields": [{"name": "x"}],
                "submit": {"label": "Go", "endpoint": f"../../edge/disconnect/{EDGE}"},
            }
        ],
    }
    # a plugin named "..": its routes would be the bridge's own (/steer/../bridge/terminate); the bridge
    # refuses such a manifest at the handshake, and the portal refuses the name too (checked below with a
    # stubbed event stream, as from a bridge that would let it through)
    dots = {"title": "Dots", "monitors": [{"id": "dots", "title": "Dots", "auto_load": "bridge/terminate"}]}
    with pytest.raises(HandshakeError):
        FakeEdge(live, "steer-dots", manifest("..", **{"..": dots})).connect()
    evil = live.add_edge("steer", manifest("psij", "gadget", gadget=ui), routes)
    try:
        page = tab.page
        hits = trap_steered(page)
        login(page, live.url)
        # a psij page (its module) with that session id: it lists jobs, and gives the session back on leaving
        go(page, "#/e/steer/psij")
        page.locator("form[aria-label='Submit a job']").wait_for()
        page.wait_for_timeout(500)
        page.evaluate("() => window.radicalEdgeExplorer.closeSessions()")
        # a page built from the ui_config: its monitors load, its form is sent
        go(page, "#/e/steer/gadget")
        page.locator("section.card[data-monitor=deeper] .note").wait_for()
        page.fill("input[name=x]", "1")
        page.click("button:text('Go')")
        page.locator(".form-status", has_text="not a route of").wait_for()
        notes = page.locator("section.card[data-monitor] .note").all_inner_texts()
        snapshot = {
            "topic": "topology",
            "data": {
                "bridge": {"url": live.url},
                "edges": {
                    "steer": {
                        "endpoint": {"connected": True, "connected_since": time.time()},
                        "plugins": manifest("..", **{"..": dots}),
                    }
                },
            },
        }
        page.route(
            lambda url: urlsplit(url).path == "/events",
            lambda route: route.fulfill(
                status=200,
                headers={"content-type": "text/event-stream"},
                body=f"id: 1\ndata: {json.dumps(snapshot)}\n\n",
            ),
        )
        page.goto("about:blank")
        page.goto(live.url + "/")
        page.locator("li.edge .edge-link", has_text="steer").wait_for()
        go(page, "#/e/steer/..")
        page.locator("main .note", has_text="cannot be reached from the portal").wait_for()
        page.wait_for_timeout(500)
        assert hits == []
        assert len(notes) == 4
        assert all("not a route of" in n for n in notes), notes
        assert live.connected(EDGE)
    finally:
        live.portal.call(evil.aclose)


def test_hostile_plugin_types_and_file_names_render_as_text(live: LiveSystem, tab: Page) -> None:
    """Plugin types that are names of Object's own properties (``constructor``, ``__proto__``) leave the tree
    whole; a staging listing with hostile names (markup, a ``javascript:`` URL, quotes and newlines, a name
    that is a JSON object) shows them as text, and every link stays on this origin, the name encoded."""
    names = [XSS, "javascript:alert(1)", "q\"uo'te\nnew line.txt", "../../../bridge/terminate"]
    entries = [{"name": n, "type": "file", "size": 1, "mtime": 0, "mode": 0o644} for n in names]
    entries += [
        {"name": {"id": "toasts", "class": "injected", "href": "javascript:alert(2)"}, "type": "symlink"},
        {"name": "odd", "type": "constructor"},
    ]

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        route = path.split("?", maxsplit=1)[0]
        if route == "/files/roots":
            return 200, {"roots": ["/data"], "home": "/data"}
        if route == "/files/register_session":
            return 200, {"sid": "s1"}
        if route == "/files/list/s1":
            return 200, {"path": "/data", "entries": entries, "truncated": False}
        return 404, {"detail": XSS}

    plugins = manifest("files", "odd", "proto")
    plugins["files"]["type"] = "staging"
    plugins["odd"]["type"] = "constructor"
    plugins["proto"]["type"] = "__proto__"
    evil = live.add_edge("ev", plugins, routes)  # a short name: the tree places it before the others
    try:
        page = tab.page
        hits = trap_steered(page)
        page.set_default_timeout(10000)
        login(page, live.url)  # the tree shows every edge
        plugin_list = edge_row(page, "ev").locator(":scope > .plugin-list")
        go(page, "#/e/ev")
        plugin_list.locator("li[data-plugin=proto] svg.icon-monogram").wait_for()
        assert plugin_list.locator("li").count() == 3
        go(page, "#/e/ev/files")
        rows = page.locator("table.data tbody tr")
        wait_for(lambda: rows.count() == len(entries), 10, "the listing")
        text = page.locator("table.data").inner_text()
        for name in names:
            assert name.replace("\n", " ") in text.replace("\n", " ")
        assert "[object Object]" in text
        assert page.locator("img[src=x]").count() == 0
        assert page.locator(".injected, #toasts:not(.toasts)").count() == 0
        links = page.evaluate(
            "() => [...document.querySelectorAll('main a[href]')].map(a => [a.getAttribute('href'), a.href])"
        )
        for raw, resolved in links:
            assert raw.startswith(("#", "/")), raw
            assert not raw.startswith("//"), raw
            assert urlsplit(resolved).netloc == urlsplit(live.url).netloc, resolved
        downloads = page.evaluate(
            "() => [...document.querySelectorAll('table.data a[download]')].map(a => a.getAttribute('href'))"
        )
        prefix = "/ev/files/file/s1?path="
        assert all(d.startswith(prefix) for d in downloads), downloads
        assert all("/" not in d.removeprefix(prefix) and "&" not in d.removeprefix(prefix) for d in downloads)
        assert {unquote(d.removeprefix(prefix)) for d in downloads} == {f"/data/{n}" for n in names}
        assert hits == []
    finally:
        live.portal.call(evil.aclose)


def test_a_hostile_task_record_renders_as_text(live: LiveSystem, tab: Page) -> None:
    """A task's output that is a JSON object (not text) is shown as JSON text: it never reaches h() as the
    props of the element (which would set its class, id or other attributes)."""
    injected = {"class": "injected", "id": "toasts", "hidden": True}
    task = {"uid": "t1", "state": "DONE", "kind": "executable", "executable": "/bin/x", "stdout": injected}
    task["stderr"] = XSS

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        answers = {
            "/tasks/list_sessions": {"sessions": ["s1"]},
            "/tasks/session_status/s1": {"status": "ready", "backends": ["fake"]},
            "/tasks/list_tasks/s1": {"tasks": [task]},
            "/tasks/task/s1/t1": task,
        }
        route = path.split("?", maxsplit=1)[0]
        return (200, answers[route]) if route in answers else (404, {"detail": route})

    plugins = manifest("tasks")
    plugins["tasks"]["type"] = "rhapsody"
    evil = live.add_edge("tasked", plugins, routes)
    try:
        page = tab.page
        login(page, live.url)
        go(page, "#/e/tasked/tasks")
        page.locator("table.data tbody tr", has_text="t1").click()
        out = page.locator("pre.output").first
        out.wait_for()
        assert json.loads(out.inner_text()) == injected
        assert page.locator("pre.output.stderr").inner_text() == XSS
        assert page.locator(".injected, #toasts:not(.toasts), img[src=x]").count() == 0
    finally:
        live.portal.call(evil.aclose)


def test_the_dom_helpers_refuse_a_link_off_this_origin(live: LiveSystem, tab: Page) -> None:
    """Defence in depth: whatever a future page passes to h()/svg(), an href or src that is not a path or a
    fragment of this origin (``javascript:``, ``data:``, ``//host``, ``/\\host``, ``https://...``) throws."""
    page = tab.page
    login(page, live.url)
    result = page.evaluate(
        """async () => {
            const { h, svg } = await import('/portal/dom.js');
            const refused = [];
            const bad = ['javascript:alert(1)', ' JavaScript:alert(1)', 'data:text/html,x', '//evil.example/',
                         '/\\\\evil.example/', 'https://evil.example/', 'java\tscript:alert(1)'];
            for (const href of bad) {
                try { h('a', { href }, 'x'); } catch (e) { refused.push(href); }
            }
            for (const src of bad) {
                try { h('img', { src }); } catch (e) { refused.push(src); }
            }
            try { svg('a', { href: 'javascript:alert(1)' }); } catch (e) { refused.push('svg'); }
            const ok = [h('a', { href: '#/e/x' }), h('a', { href: '/x/y?z=1' })].map((a) => a.getAttribute('href'));
            return { refused: refused.length, total: 2 * bad.length + 1, ok };
        }"""
    )
    assert result["refused"] == result["total"], result
    assert result["ok"] == ["#/e/x", "/x/y?z=1"]


def test_a_plugin_without_a_module_gets_a_page_from_its_ui_config(live: LiveSystem, tab: Page) -> None:
    items = [{"id": "a1", "name": "first", "state": "RUNNING"}, {"id": "b2", "name": "second", "state": "PENDING"}]

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/gadget/register_session":
            return 200, {"sid": "g1"}
        if path == "/gadget/items/g1":
            return 200, {"items": items}
        return 404, {"error": True, "status_code": 404, "detail": path}

    ui = {
        "title": "Gadgets",
        "description": "A plugin that ships no portal module.",
        "monitors": [{"id": "items", "title": "Items", "type": "table", "auto_load": "items/{sid}"}],
        "notifications": {"topic": "item_status", "id_field": "id", "state_field": "state"},
    }
    gadget = live.add_edge("gadgets", manifest("gadget", gadget=ui), routes)
    try:
        page = tab.page
        login(page, live.url)
        go(page, "#/e/gadgets/gadget")
        page.locator("table.data tbody tr", has_text="second").wait_for()
        assert page.locator("h1.page-title").inner_text().endswith("Gadgets")
        gadget.notify("gadget", "item_status", {"id": "b2", "state": "DONE"})
        page.locator("table.data tbody tr", has_text="second").locator(".badge.state-done").wait_for()
        shot(page, "generic-plugin")
    finally:
        live.portal.call(gadget.aclose)


def test_a_page_an_edge_serves_runs_no_script_in_the_bridges_origin(live: LiveSystem, tab: Page) -> None:
    """An edge answers with HTML that would use the signed-in browser's cookie; opened through the bridge it
    is sandboxed (the bridge adds ``Content-Security-Policy: sandbox``): its script never runs."""
    page_html = (
        b"<!doctype html><title>edge page</title><p id=p>static text</p>"
        b"<script>document.title = 'pwned'; fetch('/bridge/terminate', {method: 'POST'});</script>"
    )
    evil = live.add_edge("evil", manifest("web"), lambda method, path, body: (200, page_html))
    try:
        page = tab.page
        login(page, live.url)
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        page.goto(live.url + "/evil/web/index.html")
        page.locator("#p", has_text="static text").wait_for()
        page.wait_for_timeout(300)
        assert page.title() == "edge page"  # the script did not run
        assert not [u for u in seen if u.endswith("/bridge/terminate")]
        page.goto(live.url + "/healthz")
        assert '"status":"ok"' in page.content().replace(" ", "")  # the bridge was not terminated
    finally:
        live.portal.call(evil.aclose)


def test_the_content_security_policy_blocks_inline_and_foreign_scripts(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    result = page.evaluate(
        """async () => {
            const violations = [];
            document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
            const inline = document.createElement('script');
            inline.textContent = 'window.__inline = 1';
            document.body.append(inline);
            let foreign = 'loaded';
            try { await import('https://example.invalid/module.js'); } catch (e) { foreign = 'refused'; }
            await new Promise((r) => setTimeout(r, 200));
            return {inline: window.__inline === undefined ? 'blocked' : 'ran', foreign, violations};
        }"""
    )
    assert result["inline"] == "blocked", result
    assert result["foreign"] == "refused", result
    assert any(v.startswith("script-src") for v in result["violations"]), result


# ---------------------------------------------------------------- admin actions


def test_disconnecting_an_edge_asks_first(live: LiveSystem, tab: Page) -> None:
    live.add_edge("doomed", manifest("echo"))
    page = tab.page
    login(page, live.url)
    go(page, "#/e/doomed")
    page.click("button:text('Disconnect edge…')")
    dialog = page.locator("dialog.confirm")
    dialog.wait_for()
    shot(page, "confirm-disconnect")
    dialog.locator("button:text('Cancel')").click()
    time.sleep(0.5)
    assert live.connected("doomed")
    page.click("button:text('Disconnect edge…')")
    page.locator("dialog.confirm button:text('Disconnect edge')").click()
    live.wait_connected("doomed", False)
    page.wait_for_selector('li.edge.is-disconnected[data-edge="doomed"]')


def test_terminating_the_bridge_asks_first(live: LiveSystem, tmp_path: Path, browser: Any) -> None:
    # a bridge of its own (with the same certificate, which the browser trusts): this one is stopped
    with LiveSystem(tmp_path, real_edge=False, tls_from=live) as other:
        live_page = Page(browser)
        try:
            page = live_page.page
            page.goto(other.url + "/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector(".conn-live")
            page.click("button:text('Terminate bridge…')")
            page.locator("dialog.confirm button:text('Cancel')").click()
            time.sleep(0.5)
            assert not other.serving.done()
            page.click("button:text('Terminate bridge…')")
            page.locator("dialog.confirm button:text('Terminate bridge')").click()
            wait_for(other.serving.done, 10, "the bridge to stop")
            page.wait_for_selector(".conn-offline", timeout=15000)
        finally:
            live_page.close()


# ---------------------------------------------------------------- rhapsody, and the narrow layout


def test_rhapsody_tasks_and_their_states(live: LiveSystem, tab: Page) -> None:
    page = tab.page
    login(page, live.url)
    go(page, f"#/e/{EDGE}/rhapsody")
    page.wait_for_selector(".card-head .badge.state-done", timeout=30000)  # the session is READY
    page.fill("input[name=arguments]", "hello from the portal")
    page.fill("input[name=copies]", "3")
    page.click("button:text('Submit tasks')")
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.data tbody tr .badge')]"
        ".filter(b => b.textContent === 'DONE').length === 3",
        timeout=30000,
    )
    # once the tasks ended the page reads their summaries again: backend and run time filled in
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.data tbody tr')]"
        ".every(tr => tr.cells[3].textContent === 'concurrent')",
        timeout=10000,
    )
    page.locator("table.data tbody tr").first.click()
    page.locator("pre.output", has_text="hello from the portal").wait_for()
    shot(page, "rhapsody")


def test_the_layout_fits_a_laptop_split_screen(live: LiveSystem, browser: Any) -> None:
    narrow = Page(browser, width=800, height=800)
    try:
        page = narrow.page
        login(page, live.url)
        for name, where in [
            ("overview-800", "#/"),
            ("sysinfo-800", f"#/e/{EDGE}/sysinfo"),
            ("psij-800", f"#/e/{EDGE}/psij"),
        ]:
            go(page, where)
            page.wait_for_selector(".page-title")
            time.sleep(1)
            # nothing makes the whole page scroll sideways (wide tables scroll in their own box)
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 800, name
            shot(page, name)
        assert not narrow.errors, narrow.errors
    finally:
        narrow.close()


# ---------------------------------------------------------------- many edges, many jobs


def jobs_edge(count: int) -> Any:
    jobs = [
        {
            "job_id": f"job-{i:04d}",
            "native_id": str(10000 + i),
            "executor": "slurm",
            "state": ("RUNNING", "PENDING", "DONE", "FAILED")[i % 4],
            "exit_code": 0 if i % 4 == 2 else None,
            "message": None,
            "executable": "/bin/sleep",
            "arguments": [str(i)],
            "name": f"task-{i:04d}",
            "submitted": 1_700_000_000 + i,
            "updated": 1_700_000_000 + i,
            "sid": "s1",
        }
        for i in range(count)
    ]

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/psij/register_session":
            return 200, {"sid": "s1"}
        if path == "/psij/list_jobs/s1":
            return 200, {"jobs": jobs}
        if path == "/psij/executors":
            return 200, {"executors": ["local", "slurm"], "default": "slurm"}
        return 404, {"error": True, "status_code": 404, "detail": f"no route {path}"}

    return routes


def test_two_hundred_edges_and_a_thousand_jobs_render_quickly_and_update_one_row(live: LiveSystem, tab: Page) -> None:
    names = [f"fleet-{i:03d}" for i in range(200)]
    fleet = live.add_edges(names)
    bulk = live.add_edge("bulk", manifest("psij", psij={"title": "PSI/J Jobs"}), jobs_edge(1000))
    try:
        page = tab.page
        started = time.monotonic()
        login(page, live.url)
        page.wait_for_function("() => document.querySelectorAll('li.edge[data-edge^=\"fleet-\"]').length === 200")
        tree_seconds = time.monotonic() - started
        assert tree_seconds < 10, tree_seconds
        # one change touches one row: every row keeps its node, no row is added or removed
        page.evaluate(
            """() => {
                document.querySelectorAll('li.edge').forEach((li, i) => { li.__mark = i; });
                window.__treeMutations = [];
                new MutationObserver((records) => {
                    for (const r of records) {
                        const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
                        window.__treeMutations.push({type: r.type, added: r.addedNodes.length,
                            removed: r.removedNodes.length, edge: el.closest('li.edge')?.dataset.edge});
                    }
                }).observe(document.querySelector('ul.tree'),
                           {subtree: true, childList: true, attributes: true, characterData: true});
            }"""
        )
        fleet[7].drop()
        page.wait_for_selector('li.edge.is-disconnected[data-edge="fleet-007"]')
        kept = page.evaluate("() => [...document.querySelectorAll('li.edge')].every((li) => li.__mark !== undefined)")
        assert kept
        touched = page.evaluate("() => [...new Set(window.__treeMutations.map((m) => m.edge))]")
        assert touched == ["fleet-007"], touched
        assert page.evaluate("() => window.__treeMutations.every((m) => !m.removed || m.edge === 'fleet-007')")
        shot(page, "fleet")

        started = time.monotonic()
        go(page, "#/e/bulk/psij")
        page.wait_for_function("() => document.querySelectorAll('table.data tbody tr').length >= 500")
        table_seconds = time.monotonic() - started
        assert table_seconds < 10, table_seconds
        page.evaluate(
            """() => {
                const body = document.querySelector('table.data tbody');
                body.querySelectorAll('tr').forEach((tr, i) => { tr.__mark = i; });
                window.__rowMutations = [];
                new MutationObserver((records) => {
                    for (const r of records) {
                        const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
                        const tr = el?.closest('tr');
                        window.__rowMutations.push(tr ? tr.dataset.key : '(tbody)');
                    }
                }).observe(body, {subtree: true, childList: true, characterData: true, attributes: true});
            }"""
        )
        bulk.notify(
            "psij",
            "job_status",
            {"job_id": "job-0998", "state": "CANCELLED", "previous": "DONE", "exit_code": None, "time": time.time()},
        )
        row = page.locator('table.data tbody tr[data-key="job-0998"]')
        page.wait_for_selector('tr[data-key="job-0998"] .badge.state-cancelled')
        assert row.locator(".badge").inner_text() == "CANCELLED"
        touched = page.evaluate("() => [...new Set(window.__rowMutations)]")
        assert touched == ["job-0998"], touched
        assert page.evaluate(
            "() => [...document.querySelectorAll('table.data tbody tr')].every((tr) => tr.__mark !== undefined)"
        )
        counts = page.locator(".card-actions .muted").first.inner_text()
        assert counts.startswith("1000 jobs"), counts
        # the rest of the thousand is one click away
        more = page.locator("button.link-button:visible")
        if more.count():
            more.click()
        page.wait_for_function("() => document.querySelectorAll('table.data tbody tr').length === 1000")
        shot(page, "psij-1000-jobs")
    finally:
        for fake in [*fleet, bulk]:
            live.portal.call(fake.aclose)
