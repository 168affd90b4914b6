"""Bearer-token and cookie authentication, the token file and key-file checks."""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

COOKIE_NAME = "radical_edge_token"
DEFAULT_TOKEN_FILE = Path("~/.radical/edge/bridge.token")


class InsecureFileError(Exception):
    """A secret file is readable by others."""


def load_or_create_token(path: Path) -> str:
    """Read the token at ``path``; make a new random one (mode 0600) if there is none."""
    path = path.expanduser()
    if path.exists():
        check_private(path)
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def check_private(path: Path) -> None:
    """Refuse a secret (key, token) that group or others may read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureFileError(f"{path} is accessible by group/others (mode {oct(mode & 0o777)}); chmod 600 it")


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


def credential_from_headers(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The bearer token or the auth cookie, whichever the request carries."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return rest.strip()
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
