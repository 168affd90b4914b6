"""Request body limits: routes that read a whole body are capped, routes that stream it opt out.

The plugin host caps every request body at its ``max_body_bytes`` (a
framework reading a JSON or form body holds all of it in memory, and more
while it parses).  A route that consumes its body as a stream, chunk by
chunk, is exempt once its endpoint is marked with :func:`streaming_body`:

.. code-block:: python

    @app.post("/upload")
    @streaming_body
    async def upload(request: Request) -> dict[str, int]:
        async for chunk in request.stream():
            ...

The host finds the endpoint a request goes to the way Starlette does, by
asking each route of the application whether it matches the scope (through
``Mount`` s, routers and sub-applications), before the application runs.
An ASGI application that is no Starlette/FastAPI app is marked as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from starlette.routing import Match

#: the largest request body a route that is not marked with :func:`streaming_body` gets (bytes)
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: the attribute :func:`streaming_body` sets
STREAMING_BODY_ATTR = "__radical_edge_streaming_body__"

T = TypeVar("T")


def streaming_body(target: T) -> T:
    """Mark a route's endpoint (or a whole ASGI application) as streaming its request body.

    The edge then applies no body size limit to its requests: the route must
    read the body chunk by chunk (``request.stream()``), never whole
    (``request.body()``, ``request.json()``, a pydantic body parameter).
    Works above or below FastAPI's route decorator.
    """
    try:
        setattr(target, STREAMING_BODY_ATTR, True)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot mark {target!r} as streaming its body (it takes no attributes)") from None
    return target


def is_streaming_body(target: object) -> bool:
    """Whether ``target`` was marked with :func:`streaming_body`."""
    return getattr(target, STREAMING_BODY_ATTR, False) is True


def route_streams_body(app: object, scope: Mapping[str, Any]) -> bool:
    """Whether the request in ``scope`` goes to something marked with :func:`streaming_body` in ``app``.

    ``app`` itself may be marked.  Otherwise its routes (Starlette and FastAPI
    applications and routers have ``routes``) are asked to match the scope;
    the first full match decides (its endpoint, or for a ``Mount``/``Host``
    the routes of what it mounts).  A method mismatch or no match is not
    marked: such a request does not reach a body-streaming endpoint.
    """
    if is_streaming_body(app):
        return True
    routes = getattr(app, "routes", None)
    if not isinstance(routes, list):
        return False
    for route in routes:
        matches = getattr(route, "matches", None)
        if not callable(matches):
            continue
        try:
            match, child = matches(scope)
        except Exception:  # a route that cannot judge this scope: the limit applies
            return False
        if match is not Match.FULL:
            continue
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None:
            return is_streaming_body(endpoint)
        mounted = getattr(route, "app", None)
        return mounted is not None and route_streams_body(mounted, {**scope, **child})
    return False
