"""The kinds of field values a recipe holds: a type msgspec checks (and writes into the JSON
Schema) plus, in ``Meta.extra``, the phrase a message uses ("must be an integer >= 0") and a
``check`` for what a type cannot say or a user would not understand from msgspec's words.

A check returns the value as the runner wants it (``env`` values as text, ``depends_on`` as a
tuple) or raises ``Invalid``, with its own words where the phrase alone would not tell the user
what is wrong. The validator runs it on every value msgspec accepted, and on a value msgspec
refused, to find out why; a value is good only when both agree. Patterns that must match the
whole text are checked here with ``fullmatch`` (msgspec's ``pattern`` searches, and ``$``
matches before a final newline), and given to editors through ``extra_json_schema``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from msgspec import Meta

from core.recipe.problems import BAD, Invalid, Trail, show, suggest

MAX_SECONDS = 1e9  # larger durations overflow the timeouts of threading and select
#: ``retries`` and ``max_restarts``: more is a typo or a wish for "no limit" (lines then said
#: "attempt 3 of 1e23"; ``restart: always`` without ``max_restarts`` is the unlimited one)
MAX_COUNT = 10_000
SESSION_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
SOCKET_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STEP_TYPES = ("python", "shell", "session")
SESSION_ACTIONS = ("create", "recreate", "send", "kill", "detach")
BACKENDS = ("screen", "tmux")
READY_KINDS = ("port", "log", "ctx", "delay", "http", "cmd")
#: ``ready`` fields that go with one kind only
READY_OPTIONS = {"host": ("port",), "interval": ("http", "cmd")}
HEALTH_KINDS = ("port", "http", "cmd")
RESTART_POLICIES = ("no", "on_failure", "always")
PLACES = ("local", "cluster")
#: ``--executor`` / ``executor:``: a LocalCluster of N workers, or a scheduler's address
EXECUTOR_PATTERN = r"^(dask-local://[1-9][0-9]{0,3}|dask(\+tls)?://[^\s/:]+:[0-9]{1,5})$"

_NO_NUL = "^[^\\x00]*$"  # exact with search: anchored at the start, and "\n" is allowed anyway
_ENV_NAME = "^[^=\\x00]+$"
_NAME_RE = "^[^/\\u0000-\\u001f\\u007f-\\u009f]{1,128}$"
_IDENTIFIER_RE = "^[A-Za-z_][A-Za-z0-9_]*$"
_MODULE_RE = "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$"


def _kind(phrase: str, check: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    return {"phrase": phrase, "check": check}


def _check_bad(value: Any) -> None:
    if value is BAD:
        raise Invalid(silent=True)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


_NAME_CHARS = re.compile(_NAME_RE)


def valid_step_name(name: str) -> bool:
    """Names become log file names and CLI arguments, hence no '/', '.', '..' or controls."""
    return name not in (".", "..") and _NAME_CHARS.fullmatch(name) is not None


# -------------------------------------------------------------------------------- checks


def _text(value: Any) -> str:
    """Text that ends up in a process (argv, environment, path): NUL cannot be passed there."""
    if not isinstance(value, str):
        raise Invalid()
    if "\x00" in value:
        raise Invalid("must not contain NUL characters")
    return value


def _step_name(value: Any) -> str:
    if not isinstance(value, str) or not valid_step_name(value):
        raise Invalid()
    return value


def _module(value: Any) -> str:
    if not isinstance(value, str) or not all(p.isidentifier() for p in value.split(".")):
        raise Invalid()
    return value


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise Invalid()
    return value


#: a duration as docker compose, process-compose or Go write it: "2s", "1m30s", "500ms"
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _in_seconds(value: Any) -> str:
    """ " (seconds, without a unit: 90)" for a duration written with units, as the tools a
    recipe is moved from write them; nothing for other values."""
    if not isinstance(value, str) or len(value) > 40 or not _DURATION.fullmatch(value.strip()):
        return ""
    parts = _DURATION_PART.findall(value.strip())
    total = round(sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts), 3)
    return f" (seconds, without a unit: {int(total) if total.is_integer() else total})"


def _seconds(value: Any) -> float:
    """The bounds themselves are msgspec's; only the too-large case gets its own words."""
    if _is_number(value) and value > MAX_SECONDS:
        raise Invalid(f"must be at most {MAX_SECONDS:.0f} seconds, got {show(value)}")
    if not _is_number(value):
        raise Invalid(hint=_in_seconds(value))
    return float(value)


def _count(value: Any) -> int:
    """The bounds are msgspec's; only the too-large case gets its own words."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid()
    if value > MAX_COUNT:
        raise Invalid(f"must be at most {MAX_COUNT}, got {show(value)}")
    return value


#: a value of a peer tool's field (docker compose's ``restart``) -> the one that does its work
#: here; spelling is no guide ("unless-stopped" suggested nothing)
_PEER_VALUES = {"unless-stopped": "always", "never": "no"}


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            peer = _PEER_VALUES.get(value) if isinstance(value, str) else None
            meant = f" (did you mean '{peer}'?)" if peer in options else suggest(value, options)
            raise Invalid(
                f"must be one of {', '.join(options)}, got {show(value)}"
                f"{_boolean_hint(value) or meant}"
            )
        return value

    return check


def _boolean_hint(value: Any) -> str:
    """Why a word came out as true or false: YAML 1.1 reads an unquoted yes, no, on, off (any
    case) as a boolean. The list of values says what to write (a quoted "yes" is no value
    either)."""
    if not isinstance(value, bool):
        return ""
    return " (YAML reads an unquoted yes, no, on or off as a boolean: write one of these words)"


def _pattern(pattern: str, what: str) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise Invalid(f"must match {pattern} ({what}), got {show(value)}")
        return value

    return check


def _scalar_text(value: Any) -> str:
    """A YAML scalar as the text a process sees: booleans the way YAML spells them."""
    _check_bad(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and "\x00" not in value:
        return value
    if isinstance(value, (int, float)):
        try:
            return str(value)
        except ValueError:  # an integer too long for str() (Python's digit limit)
            pass
    raise ValueError(value)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(hint=_env_as_mapping(value))
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise Invalid(
                f"has an invalid variable name {show(key)} (text without '=' or NUL)",
                (key,),
                on_key=True,
            )
        try:
            out[key] = _scalar_text(item)
        except ValueError:
            hint = ' (write "" for an empty value)' if item is None else ""
            raise Invalid(
                f"value of {key!r} must be text, a number or a boolean, got {show(item)}{hint}",
                (key,),
            ) from None
    return out


def _args(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise Invalid()
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_scalar_text(item))
        except ValueError:
            raise Invalid(
                f"item {i + 1} must be text, a number or a boolean, got {show(item)}", (i,)
            ) from None
    return tuple(out)


def _env_as_mapping(value: Any) -> str:
    """docker compose's list form, ``[A=b, C=d]``: the mapping to write instead."""
    if not isinstance(value, list) or not value:
        return ""
    if not all(isinstance(item, str) and "=" in item.strip("=") for item in value):
        return ""
    import json  # only a refused env needs it

    pairs = [item.split("=", 1) for item in value[:2]]
    shown = ", ".join(f"{name}: {json.dumps(text)}" for name, text in pairs)
    more = ", ..." if len(value) > 2 else ""
    return f" (a mapping, not compose's list: env: {{{shown}{more}}})"


def _env_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "=" not in value and "\x00" not in value


def _expose(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise Invalid()
    for i, item in enumerate(value):
        _check_bad(item)
        if not _env_name(item):
            raise Invalid(
                f"item {i + 1} must be a ctx key usable as a variable name "
                f"(text without '=' or NUL), got {show(item)}",
                (i,),
            )
    return tuple(value)


def _deps(value: Any) -> tuple[str, ...]:
    """A list of step names; one name alone is accepted as a one-item list."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, dict) and items and all(isinstance(k, str) for k in items):
        # docker compose's and process-compose's form: {db: {condition: service_healthy}}
        names = ", ".join(items)
        raise Invalid(
            f"must be a list of step names, got a mapping: depends_on: [{names}] (a step waits "
            "for each to succeed, or for a background one to be ready, as its 'ready' says: "
            "there are no conditions)"
        )
    if not isinstance(items, (list, tuple)):
        raise Invalid()
    for i, item in enumerate(items):
        _check_bad(item)
        if not isinstance(item, str) or not item:
            raise Invalid(f"item {i + 1} must be a step name, got {show(item)}", (i,))
    return tuple(dict.fromkeys(items))


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid()
    for key in value:
        if not isinstance(key, str):
            raise Invalid(f"names must be text, got {show(key)}", (key,), on_key=True)
    return dict(value)


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _sub_text(sub: Trail) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in sub)
    return text.lstrip(".") or "the value"


def _json_scalar(item: Any) -> bool:
    if item is None or isinstance(item, (str, bool)):
        return True
    if isinstance(item, int):
        return _INT64_MIN <= item <= _UINT64_MAX
    return isinstance(item, float) and math.isfinite(item)


def _json_data(value: Any) -> dict[str, Any]:
    """Initial ctx: it is saved to ctx.json, so only what JSON (and orjson) can hold."""
    if not isinstance(value, dict):
        raise Invalid()
    stack: list[tuple[Any, Trail]] = [(value, ())]
    while stack:
        item, sub = stack.pop()
        _check_bad(item)
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise Invalid(
                        f"must be JSON data, but key {show(key)} is not text",
                        sub + (key,),
                        on_key=True,
                    )
                stack.append((child, sub + (key,)))
        elif isinstance(item, list):
            stack.extend((child, sub + (i,)) for i, child in enumerate(item))
        elif not _json_scalar(item):
            raise Invalid(f"must be JSON data, but {_sub_text(sub)} is {show(item)}", sub)
    return value


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid()
    try:
        re.compile(value)
    except Exception as exc:  # re.error, but also RecursionError/OverflowError on odd patterns
        raise Invalid(f"is not a valid regular expression: {exc}") from None
    return value


def _http_url(value: Any) -> str:
    """An address the http probe can ask: http or https, with a host."""
    from urllib.parse import urlsplit

    text = _text(value)
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise Invalid(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"must be an http:// or https:// URL with a host, got {show(value)}")
    return text


def _command(value: Any) -> str:
    """A shell line a check runs (``bash -c``): an empty one would always pass."""
    text = _text(value)
    if not text.strip():
        raise Invalid(f"must be a shell command, got {show(value)} (it would always pass)")
    return text


def _restart_policy(value: Any) -> str:
    """YAML 1.1 reads an unquoted ``restart: no`` as false: that is what the user wrote."""
    return "no" if value is False else _choice(RESTART_POLICIES)(value)


def check_steps(value: Any) -> list[Any]:
    """The steps list itself; each step is checked on its own."""
    if not isinstance(value, list):
        raise Invalid()
    if not value:
        raise Invalid("must list at least one step")
    return value


# -------------------------------------------------------------------------------- kinds


def _one_of(options: tuple[str, ...]) -> Any:
    return Annotated[
        Literal[options], Meta(extra=_kind("one of " + ", ".join(options), _choice(options)))
    ]


def _matching(pattern: str, what: str) -> Any:
    return Annotated[
        str,
        Meta(
            extra_json_schema={"pattern": pattern},
            extra=_kind(f"text matching {pattern}", _pattern(pattern, what)),
        ),
    ]


_TextValue = Annotated[str, Meta(pattern=_NO_NUL)]
_EnvName = Annotated[str, Meta(pattern=_ENV_NAME)]
_Scalar = _TextValue | int | float | bool
_DepName = Annotated[str, Meta(min_length=1)]

String = Annotated[str, Meta(extra=_kind("text"))]
Text = Annotated[str, Meta(pattern=_NO_NUL, extra=_kind("text", _text))]
Key = Annotated[str, Meta(min_length=1, pattern=_NO_NUL, extra=_kind("a non-empty ctx key"))]
Flag = Annotated[bool, Meta(extra=_kind("true or false"))]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT, extra=_kind("an integer >= 0", _count))]
Positive = Annotated[int, Meta(ge=1, extra=_kind("an integer >= 1"))]
Port = Annotated[int, Meta(ge=1, le=65535, extra=_kind("a port number 1-65535"))]
Seconds = Annotated[float, Meta(ge=0, le=MAX_SECONDS, extra=_kind("a number >= 0", _seconds))]
PositiveSeconds = Annotated[
    float, Meta(gt=0, le=MAX_SECONDS, extra=_kind("a number > 0", _seconds))
]
StepName = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": _NAME_RE, "not": {"enum": [".", ".."]}},
        extra=_kind(
            "a step name (1-128 characters, no '/' or control characters, not '.' or '..')",
            _step_name,
        ),
    ),
]
StepType = _one_of(STEP_TYPES)
ModulePath = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": _MODULE_RE},
        extra=_kind("a dotted module path such as 'scriptlets.python.steps.ctx_init'", _module),
    ),
]
Identifier = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": _IDENTIFIER_RE},
        extra=_kind("a Python identifier", _identifier),
    ),
]
Deps = Annotated[_DepName | tuple[_DepName, ...], Meta(extra=_kind("a list of step names", _deps))]
Env = Annotated[
    dict[_EnvName, _Scalar],
    Meta(extra=_kind("a mapping of variable names to text, numbers or booleans", _env)),
]
Params = Annotated[
    dict[str, Any], Meta(extra=_kind("a mapping of parameter names to values", _params))
]
JsonData = Annotated[dict[str, Any], Meta(extra=_kind("a mapping of JSON data", _json_data))]
Args = Annotated[
    tuple[_Scalar, ...], Meta(extra=_kind("a list of text, numbers or booleans", _args))
]
Expose = Annotated[tuple[_EnvName, ...], Meta(extra=_kind("a list of ctx keys", _expose))]
Regex = Annotated[
    str,
    Meta(extra_json_schema={"format": "regex"}, extra=_kind("a regular expression", _regex)),
]
LogSpec = Annotated[
    bool | Annotated[str, Meta(min_length=1, pattern=_NO_NUL)],
    Meta(extra=_kind("true, false or a file path")),
]
HttpUrl = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": "^https?://", "format": "uri"},
        extra=_kind("an http:// or https:// URL", _http_url),
    ),
]
Command = Annotated[
    str,
    Meta(
        pattern="^[^\\x00]*[^\\s\\x00][^\\x00]*$",
        extra=_kind("a shell command", _command),
    ),
]
RestartPolicy = Annotated[
    Literal[RESTART_POLICIES] | bool,
    Meta(extra=_kind("one of " + ", ".join(RESTART_POLICIES), _restart_policy)),
]
Action = _one_of(SESSION_ACTIONS)
Where = _one_of(PLACES)
Keys = Annotated[tuple[Key, ...], Meta(extra=_kind("a list of ctx keys"))]
ExecutorUrl = _matching(EXECUTOR_PATTERN, "dask-local://N or dask://HOST:PORT")
Backend = _one_of(BACKENDS)
SessionName = _matching(
    SESSION_NAME_PATTERN, "letters, digits, '_' and '-', at most 64, not starting with '-'"
)
SocketName = _matching(SOCKET_NAME_PATTERN, "letters, digits, '_', '.' and '-', at most 64")
