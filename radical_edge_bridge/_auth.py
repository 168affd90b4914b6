"""Bearer-token and cookie authentication.

The token file and the key-file checks are the tunnel package's
(:func:`radical_edge_tunnel.load_or_create_token`, :func:`~radical_edge_tunnel.check_private`),
shared with the edge service and the SDK.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie

COOKIE_NAME = "radical_edge_token"


class Authenticator:
    """Checks a request's credentials against the bridge token in constant time."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check_secret(self, secret: str | bytes | None) -> bool:
        if self._token is None:
            return True
        if secret is None:
            return False
        raw = secret.encode() if isinstance(secret, str) else secret
        return hmac.compare_digest(raw, self._token)

    def check_headers(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self._token is None:
            return True
        return self.check_secret(credential_from_headers(headers))

    def check_bearer(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The bearer token alone (no cookie): for WebSocket upgrades, which a browser page on any site can
        start with the bridge's cookie attached, but never with an Authorization header."""
        if self._token is None:
            return True
        return self.check_secret(bearer_from_headers(headers))


def bearer_from_headers(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Authorization: Bearer`` token, if the request carries one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return rest.strip()
    return None


def credential_from_headers(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The bearer token or the auth cookie, whichever the request carries."""
    bearer = bearer_from_headers(headers)
    if bearer is not None:
        return bearer
    for name, value in headers:
        if name == b"cookie":
            try:
                jar: SimpleCookie = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            morsel = jar.get(COOKIE_NAME)
            if morsel is not None:
                return morsel.value.encode()
    return None


def session_cookie(token: str, *, secure: bool) -> bytes:
    parts = [f"{COOKIE_NAME}={token}", "HttpOnly", "SameSite=Strict", "Path=/"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode()


def clear_session_cookie(*, secure: bool) -> bytes:
    """A Set-Cookie value that removes the session cookie from the browser."""
    parts = [f"{COOKIE_NAME}=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=0"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode()
