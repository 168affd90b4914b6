"""A test-only plugin for the system tests (``tests/test_system.py``), registered as ``bulk``.

Routes, relative to ``/{edge}/bulk/``:

* ``GET bytes?n=&seed=``: ``n`` pseudo-random bytes (``random.Random(seed)``, 1 MiB chunks), streamed
  as they are made, never held whole
* ``POST sha256``: the SHA-256 and length of the request body, hashed chunk by chunk as it arrives
* ``GET sleep?seconds=``: answers after ``seconds`` (a slow route for in-flight tests)
* ``GET block?seconds=``: blocks the edge's whole event loop for ``seconds`` (a busy, badly written plugin)
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from radical_edge_edge import Plugin, streaming_body

#: the chunk size of ``GET bytes``; a reader regenerates the same stream with :func:`pattern`
CHUNK = 1 << 20


def pattern(n: int, seed: int) -> Iterator[bytes]:
    """The bytes ``GET bytes?n=&seed=`` sends, in the chunks it sends them."""
    rng = random.Random(seed)
    left = n
    while left > 0:
        size = min(CHUNK, left)
        yield rng.randbytes(size)
        left -= size


class BulkPlugin(Plugin):
    """Large bodies both ways, and a slow route."""

    plugin_name = "bulk"
    version = "0.1.0"
    description = "Test-only: streaming download and upload, slow answers."

    def routes(self, app: FastAPI) -> None:
        @app.get("/bytes")
        def download(n: int, seed: int = 0) -> StreamingResponse:
            return StreamingResponse(
                pattern(n, seed),
                media_type="application/octet-stream",
                headers={"content-length": str(n)},
            )

        @app.post("/sha256")
        @streaming_body  # hashed as it arrives, so any size is fine (exempt from the edge's body limit)
        async def upload(request: Request) -> dict[str, int | str]:
            digest = hashlib.sha256()
            total = 0
            async for chunk in request.stream():
                digest.update(chunk)
                total += len(chunk)
            return {"bytes": total, "sha256": digest.hexdigest()}

        @app.get("/sleep")
        async def sleep(seconds: float) -> dict[str, float]:
            await anyio.sleep(seconds)
            return {"slept": seconds}

        @app.get("/block")
        async def block(seconds: float) -> dict[str, float]:
            time.sleep(seconds)  # deliberately blocking inside ``async def``: the edge's loop stands still
            return {"blocked": seconds}
