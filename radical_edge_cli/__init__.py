"""radical_edge_cli: the ``radical-edge`` command.

Also public, for the other tools (the benchmark): :func:`ensure_dev_tls`, the
development CA and certificate the demo uses.  It is imported when first used,
so the command starts without ``cryptography`` for the verbs that need none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._devcerts import DevTLS, ensure_dev_tls

__all__ = ["DevTLS", "ensure_dev_tls"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _devcerts  # noqa: PLC0415  (needs cryptography)

        return getattr(_devcerts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
