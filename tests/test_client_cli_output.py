"""What the ``radical-edge`` verbs print for a person is safe for a terminal, whatever an edge sends.

A hostile edge (or plugin) answers with names, states and error details full of terminal escape
sequences (``ESC ]0;...BEL`` retitles the terminal, ``ESC [2J`` clears it), carriage returns and
newlines (which overwrite or forge lines) and a bidirectional override (``U+202E``).  The verbs show
them escaped (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``): one line stays one line and nothing reaches the
terminal that it would obey.  ``--json`` stays exact.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response

from radical_edge_cli import _hpc, _verbs
from radical_edge_cli._cli import build_parser
from radical_edge_cli._staging import ProgressBar
from radical_edge_cli._term import shown
from radical_edge_client import AsyncBridgeClient
from radical_edge_edge import Plugin

from .client_helpers import TOKEN, Live, TLSFiles, example_plugin, live_system, tls

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "tls"]  # fixtures, imported for pytest

#: retitles and clears the terminal, overwrites the line, forges a new one, reverses what follows
EVIL = "x\x1b]0;owned\x07\x1b[2J\rforged\nline\u202etxt.exe\x9b\udcff"
#: how it must be shown
SHOWN = "x\\x1b]0;owned\\x07\\x1b[2J\\rforged\\nline\\u202etxt.exe\\x9b\\udcff"
#: nothing of these may reach a terminal raw
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b", "\udcff")


def answer(body: Any, status: int = 200) -> Response:
    """JSON as a hostile edge may send it: ASCII with escapes, a lone surrogate (``\\udcff``) included."""
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def assert_safe(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def test_shown_escapes_controls_and_keeps_the_rest() -> None:
    assert shown(EVIL) == SHOWN
    assert shown("café ✓ 日本 a\\b") == "café ✓ 日本 a\\b"  # printable text, any script, stays
    assert shown("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    assert shown(42) == "42"


def test_a_table_of_hostile_cells_keeps_its_rows_and_columns() -> None:
    out = io.StringIO()
    _hpc.table([["A", "B"], [EVIL, "ok"]], out)
    text = out.getvalue()
    assert_safe(text)
    assert text.count("\n") == 2
    assert SHOWN in text


def test_the_progress_bar_shows_a_hostile_name_escaped() -> None:
    out = io.StringIO()
    bar = ProgressBar(EVIL, out, clock=lambda: 1.0, columns=200)
    bar(1, 10)
    bar.close()
    text = out.getvalue()
    assert_safe(text.replace("\r", ""))  # the bar's own \r (redraw) only
    assert text.count("\r") == 2
    assert "\\x1b]0;owned" in text


# ---------------------------------------------------------------- hostile plugins on a live edge


class HostilePsij(Plugin):
    """psij's routes, answering with hostile job ids, names and states; cancel fails with a hostile detail."""

    plugin_name = "psij"
    plugin_type = "psij"

    def routes(self, app: FastAPI) -> None:
        job = {
            "job_id": EVIL,
            "native_id": EVIL,
            "executor": EVIL,
            "state": EVIL,
            "exit_code": None,
            "executable": EVIL,
            "arguments": [EVIL],
        }

        @app.post("/submit/{sid}")
        async def submit(sid: str) -> Response:
            return answer({"job_id": EVIL, "native_id": EVIL})

        @app.get("/list_jobs/{sid}")
        async def list_jobs(sid: str) -> Response:
            return answer({"jobs": [job]})

        @app.get("/status/{sid}/{job_id}")
        async def status(sid: str, job_id: str) -> Response:
            return answer(job)

        @app.post("/cancel/{sid}/{job_id}")
        async def cancel(sid: str, job_id: str) -> Response:
            if job_id == "refused":
                return answer({"detail": EVIL}, 409)
            return answer({"cancelled": True})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class HostileQueues(Plugin):
    plugin_name = "queue_info"
    plugin_type = "queue_info"

    def routes(self, app: FastAPI) -> None:
        @app.get("/get_info/{sid}")
        async def get_info(sid: str) -> Response:
            return answer({"queues": {EVIL: {"state": EVIL, "default": True, "time_limit": EVIL, "nodes_idle": EVIL}}})

        @app.get("/banner")
        async def banner() -> PlainTextResponse:
            return PlainTextResponse("hello\tthere\n\x1b]0;owned\x07\x1b[2Jworld\n")


@pytest.fixture
async def hostile(tls: TLSFiles, example_plugin: str) -> AsyncIterator[Live]:
    async with live_system(tls, extra_plugins=(HostilePsij(), HostileQueues())) as system:
        yield system


def arguments(system: Live, *words: str) -> Any:
    return build_parser().parse_args([*words, "--url", system.url, "--token", TOKEN, "--cert", str(system.tls.ca)])


async def printed(system: Live, verb: Callable[..., Any], *words: str) -> str:
    out = io.StringIO()
    assert await verb(arguments(system, *words), out) == 0
    return out.getvalue()


async def test_psij_and_queue_info_verbs_show_hostile_text_escaped(hostile: Live) -> None:
    jobs = await printed(hostile, _hpc.jobs, "jobs", "e1")
    assert_safe(jobs)
    assert jobs.count("\n") == 2  # the header and one row
    assert SHOWN in jobs
    queues = await printed(hostile, _hpc.queues, "queues", "e1")
    assert_safe(queues)
    assert queues.count("\n") == 2
    assert f"{SHOWN}*" in queues  # the default queue's mark
    submitted = await printed(hostile, _hpc.submit, "submit", "e1", "/bin/true")
    assert submitted == SHOWN + "\n"
    cancelled = await printed(hostile, _hpc.cancel, "cancel", "e1", "j1", "--wait", "0")
    assert cancelled == f"j1 {SHOWN}\n"
    # --json is the data, exact
    exact = json.loads(await printed(hostile, _hpc.jobs, "jobs", "e1", "--json"))
    assert exact[0]["job_id"] == EVIL


async def test_ls_and_events_show_hostile_plugin_names_and_topics_escaped(
    hostile: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = AsyncBridgeClient.topology

    async def topology(self: AsyncBridgeClient) -> dict[str, Any]:
        answer = await real(self)
        answer["edges"]["e1"]["plugins"][EVIL] = {"type": EVIL, "enabled": True}
        return answer

    monkeypatch.setattr(AsyncBridgeClient, "topology", topology)
    listing = await printed(hostile, _verbs.ls, "ls")
    assert_safe(listing)
    assert listing.count("\n") == 2
    assert SHOWN in listing
    assert EVIL in json.loads(await printed(hostile, _verbs.ls, "ls", "--json"))["e1"]["plugins"]

    async def register_callback(self: AsyncBridgeClient, edge: Any, plugin: Any, topic: Any, fn: Any) -> None:
        fn("e1", EVIL, EVIL, {"text": EVIL})

    monkeypatch.setattr(AsyncBridgeClient, "register_callback", register_callback)
    events = await printed(hostile, _verbs.events, "events", "--count", "1")
    assert_safe(events)
    assert events == f"e1/{SHOWN}/{SHOWN}: {json.dumps({'text': EVIL})}\n"
    exact = json.loads(await printed(hostile, _verbs.events, "events", "--count", "1", "--json"))
    assert exact == {"edge": "e1", "plugin": EVIL, "topic": EVIL, "data": {"text": EVIL}}


async def test_an_error_detail_from_an_edge_is_one_escaped_line(hostile: Live) -> None:
    words = ["cancel", "e1", "refused", "--url", hostile.url, "--token", TOKEN, "--cert", str(hostile.tls.ca)]
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "radical_edge_cli", *words], check=False)
    assert isinstance(done, subprocess.CompletedProcess)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert_safe(err)
    assert SHOWN in err


async def test_call_escapes_a_text_body_on_a_terminal_only(hostile: Live) -> None:
    args = arguments(hostile, "call", "e1", "queue_info", "banner")
    body = "hello\tthere\n\x1b]0;owned\x07\x1b[2Jworld\n"
    piped = io.StringIO()
    assert await _verbs.call(args, piped) == 0
    assert piped.getvalue() == body  # into a file or a pipe: the body as it is
    terminal = Terminal()
    assert await _verbs.call(args, terminal) == 0
    assert terminal.getvalue() == "hello\tthere\n\\x1b]0;owned\\x07\\x1b[2Jworld\n"


def test_job_output_with_lone_surrogates_neither_breaks_a_watch_nor_its_printing() -> None:
    """A hostile psij plugin's output may carry lone surrogates (``"\\udcff"`` in its JSON), which no
    stream can encode: the watcher counts and passes them as U+FFFD, so ``watch()`` goes on and
    ``submit --follow`` can print every character it is given."""
    from radical_edge_client._watch import JobWatcher  # noqa: PLC0415

    w = JobWatcher("j")
    (first,) = w.from_status({"state": "RUNNING", "stdout": "a\udcffb", "stderr": ""})  # no offset: counted
    assert first.data == "a\ufffdb"
    assert w.offsets["stdout"] == 5  # "a", U+FFFD (3 bytes), "b"
    event = w.from_output({"stream": "stdout", "offset": 5, "data": "c\ud800d"})
    assert event is not None
    assert event is not False
    assert event.data == "c\ufffdd"
    for update in (first, event):
        update.data.encode("utf-8")  # printable on any UTF-8 stream
