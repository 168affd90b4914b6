"""The one JSON error envelope of radical-edge: ``{"error": true, "status_code", "detail"}``."""

from __future__ import annotations

import json
from http import HTTPStatus


def error_body(status: int, detail: str) -> bytes:
    return json.dumps({"error": True, "status_code": status, "detail": detail}).encode()


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
