"""The ``job_spec`` of ``submit``: checked and normalised before PSI/J sees it (no PSI/J import here).

Accepted shape (the radical.edge form, radical.orbit's ``resources``, and what users write)::

    {"executable": "/bin/echo", "arguments": ["hi"], "directory": "/scratch/x",
     "environment": {"K": "V"}, "inherit_environment": true, "name": "my-job", "launcher": "single",
     "stdin_path": ..., "stdout_path": ..., "stderr_path": ..., "pre_launch": ..., "post_launch": ...,
     "attributes": {"duration": 600 | "600" | "00:10:00" | "1-00:00:00" | "2h",
                    "queue_name": "debug", "account": "proj", "reservation_id": "r1",
                    "node_count": 2,                                  # radical.edge's place for it
                    "custom_attributes": {"slurm.constraint": "gpu"}, # users write it here too
                    "slurm.qos": "high"},                             # and as a dotted key
     "resources": {"node_count": 2, "process_count": 4, "processes_per_node": 2,
                   "cpu_cores_per_process": 1, "gpu_cores_per_process": 1,
                   "exclusive_node_use": false, "memory": 1073741824},
     "custom_attributes": {"slurm.constraint": "gpu"}}

Anything else is refused with a :class:`SpecError` naming the problem (the route answers 422).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

#: ResourceSpecV1's fields and whether each is an integer (else a bool)
RESOURCE_FIELDS = {
    "node_count": int,
    "process_count": int,
    "processes_per_node": int,
    "cpu_cores_per_process": int,
    "gpu_cores_per_process": int,
    "exclusive_node_use": bool,
    "memory": int,
}
SPEC_FIELDS = frozenset(
    {
        "executable",
        "arguments",
        "directory",
        "environment",
        "inherit_environment",
        "name",
        "launcher",
        "stdin_path",
        "stdout_path",
        "stderr_path",
        "pre_launch",
        "post_launch",
        "attributes",
        "resources",
        "custom_attributes",
    }
)
ATTRIBUTE_FIELDS = frozenset(
    {"duration", "queue_name", "account", "project_name", "reservation_id", "node_count", "custom_attributes"}
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CUSTOM_KEY = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DHMS = re.compile(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})")
_NUMBER = re.compile(r"\d+(?:\.\d*)?")


class SpecError(ValueError):
    """The job spec cannot be submitted; the message says why (the route answers 422)."""


@dataclass
class ParsedSpec:
    executable: str
    arguments: list[str] = field(default_factory=list)
    directory: str | None = None
    environment: dict[str, str] | None = None
    inherit_environment: bool = True
    name: str | None = None
    launcher: str | None = None
    stdin_path: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    pre_launch: str | None = None
    post_launch: str | None = None
    duration: timedelta | None = None
    queue_name: str | None = None
    account: str | None = None
    reservation_id: str | None = None
    custom_attributes: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)


def parse_duration(value: Any) -> timedelta:
    """A walltime: seconds (a number or a numeric string, as upstream clients send ``"100"``),
    ``[D-]HH:MM:SS``, or PSI/J's other forms (``"H:MM"``, ``"2h"``, ``"90m"``, ``"30s"``)."""
    if isinstance(value, bool):
        raise SpecError(f"duration must be seconds or 'HH:MM:SS', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif match := _DHMS.fullmatch(text):
            days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
            if minutes >= 60 or secs >= 60:
                raise SpecError(f"duration {value!r}: minutes and seconds must be below 60")
            seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
        else:
            seconds = _psij_walltime(text)
    else:
        raise SpecError(f"duration must be seconds or 'HH:MM:SS', not {type(value).__name__}")
    if not 0 < seconds <= 366 * 86400:  # NaN fails too
        raise SpecError(f"duration must be more than 0 and at most a year, not {value!r}")
    return timedelta(seconds=seconds)


def _psij_walltime(text: str) -> float:
    try:
        from psij import JobAttributes  # noqa: PLC0415 - psij is optional: imported when used

        return float(JobAttributes.parse_walltime(text).total_seconds())
    except (ImportError, ValueError, TypeError, IndexError) as exc:
        raise SpecError(f"duration {text!r} is not seconds, 'HH:MM:SS' or a PSI/J walltime: {exc}") from None


def _text(value: Any, what: str, *, allow_control: bool = False) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a string, not {type(value).__name__}")
    if not allow_control and _CONTROL.search(value):
        raise SpecError(f"{what} must not contain control characters (newlines, tabs...)")
    return value


def _optional_text(spec: dict[str, Any], key: str, what: str | None = None) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    text = _text(value, what or key)
    return text or None


def _scalar_text(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _text(value, what)


def _custom(into: dict[str, str], attrs: Any, where: str) -> None:
    if attrs is None:
        return
    if not isinstance(attrs, dict):
        raise SpecError(f"{where} must be an object like {{'slurm.constraint': 'gpu'}}")
    for key, value in attrs.items():
        if not isinstance(key, str) or not _CUSTOM_KEY.fullmatch(key):
            raise SpecError(
                f"custom attribute {key!r} in {where}: it needs a scheduler prefix, e.g. 'slurm.constraint' or 'pbs.l'"
            )
        text = _scalar_text(value, f"custom attribute {key!r}")
        previous = into.get(key)
        if previous is not None and previous != text:
            raise SpecError(f"custom attribute {key!r} is given twice with different values")
        into[key] = text


def _resources(into: dict[str, Any], res: Any, where: str) -> None:
    if not isinstance(res, dict):
        raise SpecError(f"{where} must be an object")
    for key, given in res.items():
        value = given
        kind = RESOURCE_FIELDS.get(key)
        if kind is None:
            raise SpecError(f"unknown resource {key!r} in {where} (known: {', '.join(sorted(RESOURCE_FIELDS))})")
        if value is None:
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise SpecError(f"{where}.{key} must be true or false")
        else:
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{where}.{key} must be a positive integer, not {value!r}")
        previous = into.get(key)
        if previous is not None and previous != value:
            raise SpecError(f"{key} is given twice with different values ({previous} and {value})")
        into[key] = value


def parse_spec(spec: Any) -> ParsedSpec:
    """Check and normalise a ``job_spec``; :class:`SpecError` says what is wrong."""
    if not isinstance(spec, dict):
        raise SpecError("job_spec must be an object with at least 'executable'")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown job_spec field(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(SPEC_FIELDS))})"
        )
    executable = spec.get("executable")
    if executable is None or (isinstance(executable, str) and not executable.strip()):
        raise SpecError("job_spec.executable is required")
    out = ParsedSpec(executable=_text(executable, "executable"))

    arguments = spec.get("arguments")
    if arguments is not None:
        if not isinstance(arguments, list):
            raise SpecError("arguments must be a list of strings")
        out.arguments = [
            _scalar_text(a, f"arguments[{i}]") if not isinstance(a, str) else a for i, a in enumerate(arguments)
        ]
        for i, a in enumerate(out.arguments):
            if "\x00" in a:
                raise SpecError(f"arguments[{i}] contains a NUL byte")

    environment = spec.get("environment")
    if environment is not None:
        if not isinstance(environment, dict):
            raise SpecError("environment must be an object of NAME: value")
        env: dict[str, str] = {}
        for key, value in environment.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise SpecError(f"environment variable name {key!r} is not valid")
            env[key] = _scalar_text(value, f"environment[{key!r}]")
        out.environment = env

    inherit = spec.get("inherit_environment", True)
    if not isinstance(inherit, bool):
        raise SpecError("inherit_environment must be true or false")
    out.inherit_environment = inherit
    out.directory = _optional_text(spec, "directory")
    out.name = _optional_text(spec, "name")
    out.launcher = _optional_text(spec, "launcher")
    for key in ("stdin_path", "stdout_path", "stderr_path", "pre_launch", "post_launch"):
        setattr(out, key, _optional_text(spec, key))

    attributes = spec.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise SpecError("attributes must be an object")
        for key, value in attributes.items():
            if value is None:
                continue
            if key == "duration":
                out.duration = parse_duration(value)
            elif key in ("queue_name", "reservation_id"):
                setattr(out, key, _text(value, f"attributes.{key}") or None)
            elif key in ("account", "project_name"):
                account = _text(value, f"attributes.{key}") or None
                if out.account is not None and account is not None and account != out.account:
                    raise SpecError("attributes.account and attributes.project_name differ")
                out.account = out.account or account
            elif key == "node_count":
                _resources(out.resources, {"node_count": value}, "attributes")
            elif key == "custom_attributes":
                _custom(out.custom_attributes, value, "attributes.custom_attributes")
            elif isinstance(key, str) and "." in key:
                _custom(out.custom_attributes, {key: value}, "attributes")
            elif key in RESOURCE_FIELDS:
                raise SpecError(f"attributes.{key}: put it in job_spec.resources (only node_count is accepted here)")
            else:
                raise SpecError(
                    f"unknown attribute {key!r} (known: {', '.join(sorted(ATTRIBUTE_FIELDS))}, or a custom "
                    "attribute like 'slurm.constraint')"
                )
    _custom(out.custom_attributes, spec.get("custom_attributes"), "custom_attributes")
    if spec.get("resources") is not None:
        _resources(out.resources, spec["resources"], "resources")
    return out


__all__ = [
    "ATTRIBUTE_FIELDS",
    "RESOURCE_FIELDS",
    "SPEC_FIELDS",
    "ParsedSpec",
    "SpecError",
    "parse_duration",
    "parse_spec",
]
