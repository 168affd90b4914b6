"""An example radical-edge plugin (see docs/plugins.md).

Routes, relative to ``/{edge}/hello/``:

* ``GET greet/{sid}?name=``: a greeting; counts greetings per session
* ``POST shout/{sid}``: body ``{"text": ...}``; sends a ``shout`` notification from a worker thread
* plus the routes every plugin has (``register_session``, ``health``, ``ui_config``, ...)
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from radical_edge_edge import Plugin, Session, current_session


class HelloSession(Session):
    """Per-session state: how many greetings this session got."""

    def __init__(self, sid: str, owner: str, *, ttl: float, now: float) -> None:
        super().__init__(sid, owner, ttl=ttl, now=now)
        self.greetings = 0

    async def close(self) -> None:
        # release what the session holds (nothing here but a counter)
        self.greetings = 0


#: the route parameter type that yields the caller's HelloSession (404/410/403 otherwise)
HelloSessionDep = Annotated[HelloSession, Depends(current_session)]


class Shout(BaseModel):
    text: str


class HelloPlugin(Plugin):
    """Greets people."""

    plugin_name = "hello"
    version = "0.1.0"
    description = "Greetings, with sessions and notifications."
    session_class = HelloSession
    ui: ClassVar[dict[str, Any]] = {
        "icon": "👋",
        "title": "Hello",
        "forms": [
            {
                "id": "greet",
                "title": "Greet someone",
                "fields": [{"name": "name", "type": "text", "label": "Name", "default": "world"}],
                "submit": {"label": "Greet", "endpoint": "greet/{sid}"},
            }
        ],
        "notifications": {"topic": "shout", "id_field": "text", "state_field": "text"},
    }

    def routes(self, app: FastAPI) -> None:
        @app.get("/greet/{sid}")
        async def greet(session: HelloSessionDep, name: str = "world") -> dict[str, Any]:
            session.greetings += 1
            return {"greeting": f"Hello, {name}!", "count": session.greetings}

        @app.post("/shout/{sid}")
        async def shout(session: HelloSessionDep, body: Shout) -> dict[str, bool]:
            # blocking work goes to a worker thread; notify() is safe to call from there
            await self.run_sync(self._shout_slowly, body.text, session.sid)
            return {"ok": True}

    def _shout_slowly(self, text: str, sid: str) -> None:
        time.sleep(0.01)  # stands for real blocking work (a subprocess, a file system walk, ...)
        self.notify("shout", {"text": text.upper(), "sid": sid})
