"""The one JSON error envelope of radical-edge, shared by the bridge, the edge and the SDK.

Every error answer, whoever produces it (the bridge for an unknown edge, an
edge for an unknown plugin, a plugin for an unknown session), has the body
``{"error": true, "status_code": STATUS, "detail": DETAIL}``.  ``detail`` is
what FastAPI calls it too, so a client that only reads ``detail`` keeps working.
"""

from __future__ import annotations

import json
from typing import Any

#: the media type of an envelope body
ERROR_CONTENT_TYPE = "application/json"


def error_envelope(status: int, detail: Any) -> dict[str, Any]:
    """The envelope as a JSON-ready dict; ``detail`` is usually a string (a list for validation errors)."""
    return {"error": True, "status_code": status, "detail": detail}


def error_body(status: int, detail: Any) -> bytes:
    """The envelope encoded as UTF-8 JSON bytes."""
    return json.dumps(error_envelope(status, detail), ensure_ascii=False, allow_nan=False, default=str).encode()
