"""Where the SDK finds the bridge: arguments first, then the environment, then the token file."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("radical_edge.client")

#: the bridge writes its token here on first start; a client on the same account finds it here
DEFAULT_TOKEN_FILE = Path("~/.radical/edge/bridge.token")

ENV_URL = "RADICAL_BRIDGE_URL"
ENV_TOKEN = "RADICAL_BRIDGE_TOKEN"
ENV_CERT = "RADICAL_BRIDGE_CERT"


@dataclass(frozen=True)
class Settings:
    """The resolved connection settings: ``url``, ``token`` (``None``: none found) and ``cert`` (CA file)."""

    url: str
    token: str | None
    cert: str | None


def resolve(
    url: str | None = None,
    token: str | None = None,
    cert: str | os.PathLike[str] | None = None,
    *,
    token_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Fill what is not given from ``RADICAL_BRIDGE_URL`` / ``RADICAL_BRIDGE_TOKEN`` / ``RADICAL_BRIDGE_CERT``.

    The token comes from ``token``, else ``RADICAL_BRIDGE_TOKEN``, else the
    token file (``token_file``, default ``~/.radical/edge/bridge.token``).
    Raises ``ValueError`` when there is no URL at all.
    """
    url = url or os.environ.get(ENV_URL) or None
    if not url:
        raise ValueError(f"no bridge URL: pass url=... or set {ENV_URL}")
    if token is None:
        token = os.environ.get(ENV_TOKEN) or None
    if token is None:
        token = read_token_file(Path(token_file) if token_file is not None else DEFAULT_TOKEN_FILE)
    if cert is None:
        cert = os.environ.get(ENV_CERT) or None
    return Settings(url=url, token=token, cert=os.fspath(Path(cert).expanduser()) if cert is not None else None)


def read_token_file(path: Path) -> str | None:
    """The token in ``path`` (stripped), or ``None`` if the file does not exist or is empty."""
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the token file %s: %s", path, exc)
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s is accessible by other users: chmod 600 it", path)
    return text or None
