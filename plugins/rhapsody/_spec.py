"""Task descriptions as JSON: checking them, the callables function tasks run, and bounded results.

Nothing here imports rhapsody.  A task is one of

* ``{uid?, executable, arguments?, cwd?, env?, shell?, backend?}``: a program;
* ``{uid?, function: "module:name", args?, kwargs?, backend?}``: a function found by import path;
* a pickled callable (``"function": "cloudpickle::<base64>"`` and ``"_pickled_fields"``, the form
  radical.edge clients send), refused unless the edge operator allows it, because loading a pickle
  runs whatever code it carries.

Imports and unpickling run code too, so both happen when the task runs, in its worker thread, never
on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import json
import os
import pickle
import re
import reprlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: what a task uid may look like (it is a URL path segment: ``task/{sid}/{uid}``)
UID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: ``package.module:name`` or ``package.module:Class.method``
FUNCTION_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
#: how radical.edge clients mark a pickled field
PICKLE_PREFIX = "cloudpickle::"
#: this package's directory (its frames are left out of task tracebacks)
_HERE = os.path.dirname(os.path.abspath(__file__))
#: the environment variable that lets an edge accept pickled callables
ALLOW_PICKLED_ENV = "RADICAL_EDGE_RHAPSODY_ALLOW_PICKLED"

_EXECUTABLE_KEYS = frozenset({"uid", "backend", "executable", "arguments", "cwd", "env", "shell"})
_FUNCTION_KEYS = frozenset({"uid", "backend", "function", "args", "kwargs", "_pickled_fields"})
_PICKLABLE = ("function", "args", "kwargs")


class TaskRefused(Exception):
    """A task description cannot be accepted; ``status`` is the HTTP status to answer (422 or 403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def pickled_refusal() -> str:
    return (
        "pickled callables are refused on this edge: loading one runs arbitrary code. Send "
        '"function": "module:name" instead, or ask the edge operator to allow them '
        f"(RhapsodyPlugin(allow_pickled=True), or {ALLOW_PICKLED_ENV}=1 in the edge's environment)"
    )


# ---------------------------------------------------------------- the callable a function task runs


@dataclass
class FunctionCall:
    """A function task's call, resolved when it runs (in a worker thread).

    ``name`` is ``module:qualname``, or ``pickled_function`` holds a pickle; ``args``/``kwargs``
    are plain JSON values or pickles.  Calling the object imports or unpickles, then calls (an
    ``async def`` function is run to completion with ``asyncio.run``).
    """

    name: str | None = None
    pickled_function: bytes | None = None
    args: list[Any] | bytes = field(default_factory=list)
    kwargs: dict[str, Any] | bytes = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else "<pickled>"

    def resolve(self) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        if self.pickled_function is not None:
            func = pickle.loads(self.pickled_function)
        else:
            assert self.name is not None
            module_name, _, qualname = self.name.partition(":")
            func = importlib.import_module(module_name)
            for part in qualname.split("."):
                func = getattr(func, part)
        args = pickle.loads(self.args) if isinstance(self.args, bytes) else self.args
        kwargs = pickle.loads(self.kwargs) if isinstance(self.kwargs, bytes) else self.kwargs
        if not callable(func):
            raise TypeError(f"{self.label} is a {type(func).__name__}, not a function")
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise TypeError("args must be a list and kwargs a dict")
        return func, list(args), kwargs

    @staticmethod
    def run(func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        if asyncio.iscoroutinefunction(func):
            return asyncio.run(func(*args, **kwargs))
        return func(*args, **kwargs)

    def __call__(self) -> Any:
        return self.run(*self.resolve())


# ---------------------------------------------------------------- parsing


@dataclass
class TaskSpec:
    """One checked task description."""

    uid: str | None
    backend: str | None
    executable: str | None = None
    arguments: list[str] = field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] | None = None
    shell: bool = False
    call: FunctionCall | None = None

    @property
    def kind(self) -> str:
        return "function" if self.call is not None else "executable"

    def describe(self) -> dict[str, Any]:
        """What the task's record shows of its description."""
        if self.call is not None:
            return {"kind": "function", "function": self.call.label}
        out: dict[str, Any] = {"kind": "executable", "executable": self.executable, "arguments": self.arguments}
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.shell:
            out["shell"] = True
        return out


def _fail(uid: Any, message: str, status: int = 422) -> TaskRefused:
    where = f"task {uid}: " if isinstance(uid, str) else ""
    return TaskRefused(status, where + message)


def _unpickle_field(uid: Any, name: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith(PICKLE_PREFIX):
        raise _fail(uid, f"{name} is listed in _pickled_fields but is not a {PICKLE_PREFIX}<base64> string")
    try:
        return base64.b64decode(value[len(PICKLE_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise _fail(uid, f"{name} is not valid base64") from None


def _is_pickled(raw: dict[str, Any]) -> bool:
    if "_pickled_fields" in raw:
        return True
    return any(isinstance(raw.get(k), str) and raw[k].startswith(PICKLE_PREFIX) for k in _PICKLABLE)


def parse_task(raw: Any, *, allow_pickled: bool) -> TaskSpec:
    """Check one task description; raises :class:`TaskRefused` (422, or 403 for a refused pickle)."""
    if not isinstance(raw, dict):
        raise _fail(None, f"a task is a JSON object, not {type(raw).__name__}")
    uid = raw.get("uid")
    if uid is not None and (not isinstance(uid, str) or not UID.fullmatch(uid)):
        raise _fail(None, f"uid {uid!r} must be 1-128 letters, digits and '_.:-'")
    backend = raw.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise _fail(uid, "backend must be a backend name")
    has_exe, has_func = raw.get("executable") is not None, raw.get("function") is not None
    if has_exe == has_func:
        raise _fail(uid, "give exactly one of 'executable' (a program) or 'function' ('module:name')")
    allowed = _EXECUTABLE_KEYS if has_exe else _FUNCTION_KEYS
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(
            uid,
            f"unknown field(s) {', '.join(unknown)}; an {'executable' if has_exe else 'function'} "
            f"task takes {', '.join(sorted(allowed))}",
        )
    if has_exe:
        return _parse_executable(raw, uid, backend)
    if _is_pickled(raw):
        if not allow_pickled:
            raise _fail(uid, pickled_refusal(), status=403)
        return _parse_pickled(raw, uid, backend)
    name = raw["function"]
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise _fail(uid, f"function must be an import path 'package.module:name', not {name!r}")
    args, kwargs = raw.get("args", []), raw.get("kwargs", {})
    if not isinstance(args, list):
        raise _fail(uid, "args must be a list")
    if not isinstance(kwargs, dict):
        raise _fail(uid, "kwargs must be an object")
    return TaskSpec(uid, backend, call=FunctionCall(name=name, args=args, kwargs=kwargs))


def _parse_executable(raw: dict[str, Any], uid: Any, backend: str | None) -> TaskSpec:
    executable, arguments = raw["executable"], raw.get("arguments", [])
    if not isinstance(executable, str) or not executable:
        raise _fail(uid, "executable must be a non-empty string")
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise _fail(uid, "arguments must be a list of strings")
    cwd, env, shell = raw.get("cwd"), raw.get("env"), raw.get("shell", False)
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise _fail(uid, "cwd must be a directory path")
    if env is not None and (
        not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise _fail(uid, "env must be an object of strings")
    if env is not None and any(not k or "=" in k for k in env):
        raise _fail(uid, "env names must be non-empty and without '='")
    if not isinstance(shell, bool):
        raise _fail(uid, "shell must be true or false")
    if any("\0" in s for s in [executable, *arguments, cwd or "", *(env or {}), *(env or {}).values()]):
        raise _fail(uid, "strings may not contain NUL characters")
    return TaskSpec(uid, backend, executable=executable, arguments=list(arguments), cwd=cwd, env=env, shell=shell)


def _parse_pickled(raw: dict[str, Any], uid: Any, backend: str | None) -> TaskSpec:
    fields = raw.get("_pickled_fields")
    if fields is None:
        fields = [k for k in _PICKLABLE if isinstance(raw.get(k), str) and raw[k].startswith(PICKLE_PREFIX)]
    if not isinstance(fields, list) or not set(fields) <= set(_PICKLABLE):
        raise _fail(uid, f"_pickled_fields must list some of {', '.join(_PICKLABLE)}")
    call = FunctionCall()
    if "function" in fields:
        call.pickled_function = _unpickle_field(uid, "function", raw["function"])
    else:
        name = raw["function"]
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            raise _fail(uid, f"function must be an import path 'package.module:name', not {name!r}")
        call.name = name
    for key, default in (("args", []), ("kwargs", {})):
        value = raw.get(key, default)
        if key in fields:
            value = _unpickle_field(uid, key, value)
        elif not isinstance(value, type(default)):
            raise _fail(uid, f"{key} must be a {'list' if key == 'args' else 'object'}")
        setattr(call, key, value)
    return TaskSpec(uid, backend, call=call)


# ---------------------------------------------------------------- bounded results


def clip_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to its last ``limit`` characters (the end of an output says most); and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[len(text) - limit :], True


def bounded_repr(value: Any, limit: int) -> str:
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 4, min(limit, 4096), min(limit, 4096), 400
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = r.maxdict = 64
    try:
        text = r.repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the task
        text = f"<{type(value).__name__} object; repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_value(value: Any, limit: int) -> tuple[Any, bool]:
    """A return value as plain JSON (a copy) if it encodes within ``limit`` bytes, else its bounded repr.

    Returns ``(value, is_repr)``.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return bounded_repr(value, limit), True
    if len(text.encode()) > limit:
        return bounded_repr(value, limit), True
    return json.loads(text), False


def describe_error(exc: BaseException, limit: int) -> str:
    """``Type: message`` after the traceback of the task's own code (this package's frames and the import
    machinery's left out), at most ``limit`` characters (the end is kept)."""
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith((_HERE, "<frozen"))):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    return text if len(text) <= limit else "..." + text[len(text) - limit + 3 :]


def encoded_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())


__all__ = [
    "ALLOW_PICKLED_ENV",
    "FUNCTION_NAME",
    "PICKLE_PREFIX",
    "UID",
    "FunctionCall",
    "TaskRefused",
    "TaskSpec",
    "bounded_repr",
    "clip_text",
    "describe_error",
    "encode_value",
    "encoded_size",
    "parse_task",
    "pickled_refusal",
]
