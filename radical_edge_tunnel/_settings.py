"""Where the bridge is and how to prove who we are: one resolution for every side that dials a bridge.

The edge service, the SDK, the benchmark's load driver and edges started by
other programs all find the bridge the same way (:func:`resolve_settings`):

==========  =========================  ==========================  ==============================
what        given                      else                        else
==========  =========================  ==========================  ==============================
URL         ``url``                    ``RADICAL_BRIDGE_URL``      (an error)
token       ``token``                  ``RADICAL_BRIDGE_TOKEN``    the token file (``token_file``,
                                                                   default ``~/.radical/edge/bridge.token``)
CA file     ``cert``                   ``RADICAL_BRIDGE_CERT``     the system trust store
==========  =========================  ==========================  ==============================

TLS is always verified; the only way out is naming ``insecure_skip_tls_verify``.

Secret files (the token file, the bridge's TLS key) are refused when group or
others can access them, everywhere, with the ``chmod 600 PATH`` to run
(:func:`read_token_file`, :func:`check_private`).  The bridge makes its token
file with :func:`load_or_create_token`.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ._ws_client import ConnectError, client_ssl_context, websocket_url

log = logging.getLogger("radical_edge.tunnel")

#: the bridge writes its token here on first start; an edge or client on the same account finds it here
DEFAULT_TOKEN_FILE = Path("~/.radical/edge/bridge.token")

ENV_URL = "RADICAL_BRIDGE_URL"
ENV_TOKEN = "RADICAL_BRIDGE_TOKEN"
ENV_CERT = "RADICAL_BRIDGE_CERT"

_GROUP_OR_OTHERS = stat.S_IRWXG | stat.S_IRWXO


class InsecureFileError(PermissionError):
    """A secret file (token, TLS key) that group or others may access; the message says what to run."""


def _refuse_if_shared(path: Path, mode: int) -> None:
    if mode & _GROUP_OR_OTHERS:
        raise InsecureFileError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}), so it is refused: "
            f"run chmod 600 {path}"
        )


def check_private(path: str | os.PathLike[str]) -> None:
    """Refuse a secret (key, token) that group or others may access (:class:`InsecureFileError`).

    ``OSError`` if it cannot be examined (a missing file, for one).
    """
    path = Path(path).expanduser()
    _refuse_if_shared(path, path.stat().st_mode)


def read_token_file(path: str | os.PathLike[str]) -> str | None:
    """The token in ``path`` (stripped), or ``None`` when the file does not exist or is empty.

    Raises :class:`InsecureFileError` when group or others may access the file
    (the message names the ``chmod 600`` to run) and ``OSError`` (naming the
    file) when it cannot be read.
    """
    path = Path(path).expanduser()
    try:
        with path.open("rb") as fh:  # the mode of the file read, not of one swapped in after a check
            _refuse_if_shared(path, os.fstat(fh.fileno()).st_mode)
            raw = fh.read(64 * 1024)
    except FileNotFoundError:
        return None
    except InsecureFileError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"the token file {path} does not hold a text token") from None
    return text or None


def load_or_create_token(path: str | os.PathLike[str]) -> str:
    """(the bridge) The token in ``path``; a new random one, written with mode 0600, if there is none.

    A token file that group or others may access is refused (:class:`InsecureFileError`), not replaced.
    """
    path = Path(path).expanduser()
    token = read_token_file(path)
    if token is not None:
        return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


@dataclass(frozen=True)
class BridgeSettings:
    """A resolved bridge: ``url`` (as given), ``token``, ``cert`` (CA file) and the TLS context to dial with.

    Make one with :func:`resolve_settings` (arguments, then the environment,
    then the token file) or :meth:`create` (only what is given).  When the
    token came from ``token_file``, :meth:`current_token` reads it again on
    each dial, so a bridge that made a new token is followed, and a file
    made readable by others since is refused.
    """

    url: str
    token: str | None = field(default=None, repr=False)
    cert: str | None = None
    #: the file the token was read from (None: given, from the environment, or none)
    token_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    #: the TLS context for an ``https``/``wss`` URL (None for plain ``http``/``ws``)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    #: the host name the bridge's certificate is verified for, when it is not the URL's host (a child
    #: edge dialling the bridge through an SSH forward on 127.0.0.1 still checks the bridge's real name)
    tls_server_name: str | None = None

    @classmethod
    def create(
        cls,
        url: str,
        *,
        token: str | None = None,
        cert: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
        insecure_skip_tls_verify: bool = False,
        tls_server_name: str | None = None,
    ) -> BridgeSettings:
        """Settings from exactly what is given (no environment); the token from ``token_file`` if ``token`` is None.

        ``tls_server_name``: verify the bridge's certificate for this name instead of the URL's host
        (verification stays on: the name only changes what the certificate must match).

        Raises ``ValueError`` for a bad URL or CA file, :class:`InsecureFileError`
        for a token file others can read, ``OSError`` for one that cannot be read.
        """
        ws_url = websocket_url(url, "/")  # ValueError for a bad scheme or no host
        source: Path | None = None
        if token is not None:
            token = token.strip() or None
        elif token_file is not None:
            source = Path(token_file).expanduser()
            token = read_token_file(source)
        cert_path = os.fspath(Path(cert).expanduser()) if cert is not None else None
        ctx: ssl.SSLContext | None = None
        if ws_url.startswith("wss:"):
            try:
                ctx = client_ssl_context(cert_path, insecure_skip_tls_verify=insecure_skip_tls_verify)
            except ConnectError as exc:
                raise ValueError(str(exc)) from None
        elif cert_path is not None or insecure_skip_tls_verify:
            log.warning("%s is not TLS: the CA file and insecure_skip_tls_verify have no effect", url)
        server_name = (tls_server_name or "").strip() or None
        return cls(url, token, cert_path, source, insecure_skip_tls_verify, ctx, server_name)

    def websocket_url(self, path: str) -> str:
        """The ``ws(s)://`` URL of the bridge's endpoint ``path`` (``/register``, ``/connect``)."""
        return websocket_url(self.url, path)

    def current_token(self) -> str | None:
        """The token to send now: read again from :attr:`token_file` if it came from one.

        A file that vanished, emptied or cannot be read leaves the token as it
        was; one that group or others may now access raises :class:`InsecureFileError`.
        """
        if self.token_file is None:
            return self.token
        try:
            fresh = read_token_file(self.token_file)
        except InsecureFileError:
            raise
        except (OSError, ValueError) as exc:
            log.warning("%s; using the token read before", exc)
            return self.token
        return fresh if fresh is not None else self.token


def resolve_settings(
    url: str | None = None,
    token: str | None = None,
    cert: str | os.PathLike[str] | None = None,
    *,
    token_file: str | os.PathLike[str] | None = None,
    insecure_skip_tls_verify: bool = False,
    tls_server_name: str | None = None,
) -> BridgeSettings:
    """Fill what is not given from ``RADICAL_BRIDGE_URL``, ``RADICAL_BRIDGE_TOKEN`` (else the token file)
    and ``RADICAL_BRIDGE_CERT``.

    ``token_file`` defaults to ``~/.radical/edge/bridge.token``; a missing one
    means no token.  Raises ``ValueError`` when there is no URL (or a bad one,
    or a CA file that does not exist), :class:`InsecureFileError` when the
    token file is accessible by group or others, ``OSError`` when it cannot be read.
    """
    url = url or os.environ.get(ENV_URL) or None
    if not url:
        raise ValueError(f"no bridge URL: give it (--url, url=...) or set {ENV_URL}")
    if token is None:
        token = os.environ.get(ENV_TOKEN) or None
    if cert is None:
        cert = os.environ.get(ENV_CERT) or None
    return BridgeSettings.create(
        url,
        token=token,
        cert=cert,
        token_file=(token_file if token_file is not None else DEFAULT_TOKEN_FILE) if token is None else None,
        insecure_skip_tls_verify=insecure_skip_tls_verify,
        tls_server_name=tls_server_name,
    )
