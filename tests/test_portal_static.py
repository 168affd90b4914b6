"""The portal's files as the bridge serves them (plain HTTP over TLS, no browser): public pages with the
security headers (CSP without 'unsafe-inline', nosniff, no referrer), strict file names, data routes that stay
protected, and the rules the portal's code keeps (no HTML parsing of data, modules from this origin only).
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest

from radical_edge_bridge import Bridge

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

PORTAL = Path(__file__).parent.parent / "portal"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
#: every file the portal is made of, as the browser asks for it
FILES = [f"/portal/{p.name}" for p in sorted(PORTAL.glob("*")) if p.suffix in (".js", ".css", ".svg")] + [
    f"/plugins/{p.name}" for p in sorted((PORTAL / "plugins").glob("*.js"))
]


def client(bridge: Bridge, client_ssl, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{bridge.port}", verify=client_ssl, headers=headers)


async def raw(bridge: Bridge, client_ssl, target: str, method: str = "GET", headers: str = "") -> bytes:
    """One request exactly as written (no client normalises ``..`` away)."""
    stream = await anyio.connect_tcp(
        "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
    )
    async with stream:
        await stream.send(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(5):
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return data


def check_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_page_is_public_and_carries_the_security_headers(bridge: Bridge, client_ssl) -> None:
    async with client(bridge, client_ssl) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        check_headers(page)
        head = await c.head("/")
        assert head.status_code == 200
        assert head.content == b""
        check_headers(head)
    html = page.text
    assert '<script type="module" src="/portal/app.js"></script>' in html
    # no inline script, no inline style, no event handler attributes: the CSP would block them anyway
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert script.strip() == ""
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.I)
    # everything the page refers to is served
    for ref in re.findall(r'(?:src|href)="(/[^"]+)"', html):
        async with client(bridge, client_ssl) as c:
            assert (await c.get(ref)).status_code == 200, ref


@pytest.mark.parametrize("path", FILES)
async def test_every_portal_file_is_served_with_its_type_and_the_headers(bridge: Bridge, client_ssl, path: str) -> None:
    async with client(bridge, client_ssl) as c:
        r = await c.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(TYPES[Path(path).suffix])
    check_headers(r)
    on_disk = PORTAL / path.removeprefix("/portal/") if path.startswith("/portal/") else PORTAL / path.lstrip("/")
    assert r.content == on_disk.read_bytes()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/portal/nosuch.js", 404),  # a good name that is not there
        ("/portal/app.js?v=2", 200),  # the query is not part of the name
        # not a portal file name: not public, so refused before anything is looked up
        ("/portal/", 401),
        ("/portal/__init__.py", 401),
        ("/portal/README.md", 401),
        ("/portal/index.html", 401),
        ("/portal/App.js", 401),
        ("/portal/.hidden.js", 401),
        ("/portal/app.js/", 401),
        ("/portal/plugins/sysinfo.js", 401),
        ("/portal/../pyproject.toml", 401),
        ("/portal/..%2Fpyproject.toml", 401),
        ("/portal/%2e%2e/%2e%2e/etc/passwd", 401),
        ("/portal/app.js%00.css", 401),
        ("/portal//etc/passwd", 401),
    ],
)
async def test_the_static_route_takes_only_plain_file_names(
    bridge: Bridge, client_ssl, target: str, status: int
) -> None:
    reply = await raw(bridge, client_ssl, target)
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:200]
    assert b"[tool.setuptools]" not in reply
    assert b"root:" not in reply


async def test_with_the_token_a_bad_name_is_still_never_a_file(bridge: Bridge, client_ssl) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    for target in ("/portal/__init__.py", "/portal/../pyproject.toml", "/portal/README.md"):
        reply = await raw(bridge, client_ssl, target, headers=auth)
        # forwarded as /{edge}/...: "portal" is a reserved edge name, so no edge has it
        assert reply.startswith(b"HTTP/1.1 404"), reply[:200]
        assert b"radical_edge_portal" not in reply
        assert b"[tool." not in reply


async def test_only_get_and_head_are_public(bridge: Bridge, client_ssl) -> None:
    for method in ("POST", "PUT", "DELETE"):
        reply = await raw(bridge, client_ssl, "/portal/app.js", method=method, headers="Content-Length: 0\r\n")
        assert reply.startswith(b"HTTP/1.1 401"), (method, reply[:100])


async def test_the_data_routes_stay_protected_and_take_the_cookie(bridge: Bridge, client_ssl) -> None:
    async with client(bridge, client_ssl) as anonymous:
        for method, path in [("GET", "/edges"), ("POST", "/edge/list"), ("GET", "/events"), ("GET", "/e1/sysinfo/x")]:
            assert (await anonymous.request(method, path)).status_code == 401, path
        wrong = await anonymous.post("/auth", json={"token": "nope"})
        assert wrong.status_code == 401
        assert "set-cookie" not in wrong.headers
        signed = await anonymous.post("/auth", json={"token": TOKEN})
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"]
        assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    name, _, rest = cookie.partition("=")
    async with client(bridge, client_ssl, cookie=f"{name}={rest.split(';')[0]}") as browser:
        assert (await browser.get("/edges")).status_code == 200
        assert (await browser.post("/edge/list")).status_code == 200


async def test_get_auth_says_whether_the_caller_is_signed_in_and_delete_signs_out(bridge: Bridge, client_ssl) -> None:
    """The portal asks ``GET /auth`` before it shows the sign-in form (no 401 in the browser's console), and
    ``DELETE /auth`` clears its cookie; neither says anything but the caller's own state."""
    async with client(bridge, client_ssl) as anonymous:
        answer = await anonymous.get("/auth")
        assert (answer.status_code, answer.json()) == (200, {"authenticated": False})
        wrong = await anonymous.get("/auth", headers={"Cookie": "radical_edge_token=nope"})
        assert wrong.json() == {"authenticated": False}
        signed = await anonymous.post("/auth", json={"token": TOKEN})
    token_cookie = signed.headers["set-cookie"].split(";")[0]
    async with client(bridge, client_ssl, cookie=token_cookie) as browser:
        assert (await browser.get("/auth")).json() == {"authenticated": True}
        out = await browser.delete("/auth")
        assert (out.status_code, out.json()) == (200, {"authenticated": False})
        cleared = {p.strip() for p in out.headers["set-cookie"].split(";")}
        assert {"radical_edge_token=", "Max-Age=0", "HttpOnly", "Path=/"} <= cleared


# ---------------------------------------------------------------- rules the portal's code keeps


def portal_code() -> list[Path]:
    return sorted(PORTAL.rglob("*.js")) + sorted(PORTAL.rglob("*.html"))


def test_nothing_in_the_portal_parses_html() -> None:
    banned = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|DOMParser")
    for path in portal_code():
        found = banned.findall(path.read_text())
        assert not found, f"{path}: {found}"


def test_modules_come_from_this_origin_only() -> None:
    specifier = re.compile(r"""\bimport\s*(?:[^"'()]*?\bfrom\s*)?["']([^"']+)["']""")
    dynamic = re.compile(r"\bimport\(\s*([^)]*)\)")
    for path in sorted(PORTAL.rglob("*.js")):
        text = path.read_text()
        for spec in specifier.findall(text):
            assert spec.startswith(("./", "/portal/")), f"{path}: import {spec!r}"
            target = (path.parent / spec).resolve() if spec.startswith("./") else PORTAL / spec.removeprefix("/portal/")
            assert target.is_file(), f"{path}: {spec!r} does not exist"
        for expr in dynamic.findall(text):
            # the one dynamic import: a plugin's module, by a name the bridge's route pattern allows
            assert expr == "`/plugins/${type}.js`", f"{path}: import({expr})"
    app = (PORTAL / "app.js").read_text()
    assert "const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;" in app
    assert "if (!MODULE_NAME.test(type)) return false;" in app


def test_the_token_is_never_put_in_web_storage() -> None:
    for path in portal_code():
        text = path.read_text()
        assert "localStorage" not in text, path
        assert "sessionStorage" not in text, path
