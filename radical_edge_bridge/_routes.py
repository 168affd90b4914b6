"""The bridge's own routes as a table: method, exact pattern, handler, and whether it is public.

A request is public only when its method and its whole path match a route
marked public; everything else needs a credential.  A path that matches no
route is forwarded to an edge (``/{edge}/{plugin}/...``); edge names can never
equal a route's first segment (see ``RESERVED_EDGE_NAMES``).  A route that
answers ``GET`` answers ``HEAD`` too (same head, no body), unless it says not
to (an endless event stream has no meaningful HEAD).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from ._exchange import Exchange, RequestHead

#: ``handler(exchange, head, params, query)``; ``params`` are the pattern's named groups, undecoded
RouteHandler = Callable[[Exchange, RequestHead, Mapping[str, str], str], Awaitable[None]]

#: what a ``{name}`` placeholder matches when the route does not say: one path segment
_SEGMENT = r"[^/]+"


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: RouteHandler
    public: bool = False

    @classmethod
    def make(
        cls,
        methods: str | Iterable[str],
        template: str,
        handler: RouteHandler,
        *,
        public: bool = False,
        head: bool = True,
        **placeholders: str,
    ) -> Route:
        """``Route.make("GET", "/plugins/{name}.js", h, name=r"[a-z]+")``: placeholders become named groups."""
        wanted = {methods} if isinstance(methods, str) else set(methods)
        if head and "GET" in wanted:
            wanted.add("HEAD")
        regex = ""
        for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
            regex += re.escape(literal)
            if name:
                regex += f"(?P<{name}>{placeholders.get(name, _SEGMENT)})"
        return cls(frozenset(wanted), re.compile(regex), handler, public)


@dataclass(frozen=True)
class Match:
    route: Route
    params: Mapping[str, str]
    #: False: the path is a route's, the method is not (405)
    allowed: bool
    #: the methods the path takes, for the ``Allow`` header of a 405
    allow: frozenset[str]

    @property
    def public(self) -> bool:
        return self.allowed and self.route.public


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = tuple(routes)

    def find(self, method: str, path: str) -> Match | None:
        """The route for ``method path``; a non-allowed Match if only the method is wrong; None if no route."""
        wrong_method: list[tuple[Route, re.Match[str]]] = []
        for route in self._routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if method in route.methods:
                return Match(route, m.groupdict(), True, route.methods)
            wrong_method.append((route, m))
        if not wrong_method:
            return None
        allow = frozenset().union(*(r.methods for r, _ in wrong_method))
        route, m = wrong_method[0]
        return Match(route, m.groupdict(), False, allow)
