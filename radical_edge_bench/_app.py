"""The benchmark's plugin: one small FastAPI app, served through the tunnel and directly.

* ``GET /small``: a small JSON document (the per-request overhead);
* ``GET /download?size=N&chunk=C``: N bytes, streamed in chunks of C bytes
  (one chunk object reused, so the app itself costs next to nothing);
* ``POST /upload``: counts the request body's bytes without holding them (marked
  :func:`~radical_edge_edge.streaming_body`, so the edge applies no body limit to it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from radical_edge_edge import streaming_body

SMALL_BODY = b'{"ok":true,"service":"radical-edge-bench","n":42}'
DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 4 * 1024 * 1024


def build_app() -> FastAPI:
    app = FastAPI(title="radical-edge bench", version="1", docs_url=None, redoc_url=None)

    @app.get("/small")
    async def small() -> Response:
        return Response(SMALL_BODY, media_type="application/json")

    @app.get("/download")
    async def download(size: int, chunk: int = DEFAULT_CHUNK) -> StreamingResponse:
        chunk = max(1, min(chunk, MAX_CHUNK))
        block = b"\x5a" * chunk

        def body() -> Iterator[bytes]:
            left = size
            while left >= chunk:
                yield block
                left -= chunk
            if left > 0:
                yield block[:left]

        return StreamingResponse(
            _iterate(body()), media_type="application/octet-stream", headers={"content-length": str(max(size, 0))}
        )

    @app.post("/upload")
    @streaming_body
    async def upload(request: Request) -> Response:
        total = 0
        async for part in request.stream():
            total += len(part)
        return Response(b'{"bytes":%d}' % total, media_type="application/json")

    return app


async def _iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # an async generator: Starlette would run a sync iterator in a worker thread per chunk
    for chunk in chunks:
        yield chunk
