"""Recipes: the YAML file, loaded safely and checked whole before anything runs.

PyYAML never builds Python objects here: the loader composes the node tree (which keeps line and
column marks) and converts it itself, so an unsafe tag is reported instead of executed and every
problem can name its line. Problems are collected and raised together in one ``RecipeError``,
because fixing a recipe one error per run is miserable.

The accepted fields live in one table per level (``RECIPE_FIELDS``, ``STEP_FIELDS``,
``READY_FIELDS``); the validator and ``recipe_json_schema`` both read them, so the editor schema
cannot drift from what the loader accepts.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import importlib
import inspect
import math
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.graph import find_cycle
from core.privatedir import chain_problem, folder_problem

SESSION_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"


@dataclass(frozen=True)
class Readiness:
    """When a background step counts as ready: exactly one of port / log / ctx / delay."""

    kind: str  # "port" | "log" | "ctx" | "delay"
    value: Any  # int port, str regex, str ctx key, float seconds
    host: str = "127.0.0.1"
    timeout: float = 30.0


@dataclass(frozen=True)
class Step:
    name: str
    type: str  # "python" | "shell" | "session"
    index: int  # position in the file, 0-based
    line: int  # 1-based line of the step's mapping in the file
    depends_on: tuple[str, ...]  # resolved: absent in YAML -> (previous step,) or ()
    explicit_deps: bool = False  # depends_on was written in the YAML
    background: bool = False
    ready: Readiness | None = None
    grace: float = 5.0
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    continue_on_error: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # python
    module: str | None = None
    function: str = "run"
    params: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    # shell
    cmd: str | None = None
    args: tuple[str, ...] = ()
    run: str | None = None
    expose: tuple[str, ...] = ()
    # session
    backend: str = "screen"
    action: str | None = None
    session: str | None = None
    command: str | None = None
    log: bool | str | None = None  # None: recreate logs (contract), create does not
    socket: str | None = None


@dataclass(frozen=True)
class Recipe:
    path: Path  # absolute path of the YAML file
    workspace: Path  # put on sys.path; default cwd of shell steps
    steps: tuple[Step, ...]
    name: str = ""
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ctx: dict[str, Any] = field(default_factory=dict)
    jobs: int | None = None
    # Doubts that do not stop a run (a cmd that a step before it may build); see _Validator.paths
    warnings: tuple[Problem, ...] = ()

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.depends_on for s in self.steps}


# --------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, located well enough for an editor to jump to it."""

    file: str
    line: int | None
    column: int | None
    step: str | None
    message: str
    # True when ``step`` is a stand-in such as "step #3" (the step has no usable name), so it is
    # shown as is rather than quoted as a name.
    step_is_label: bool = field(default=False, repr=False, compare=False)

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.step is not None:
            parts.append(self.step if self.step_is_label else f"step '{self.step}'")
        parts.append(self.message)
        return ": ".join(parts)


class RecipeError(Exception):
    """Everything wrong with a recipe at once; ``str()`` is one problem per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


# --------------------------------------------------------------------------------------------
# Limits: a recipe is a small hand-written file; anything far beyond that is a mistake or an attack.

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 1_000_000  # values built, aliases expanded: stops "billion laughs"
MAX_DEPTH = 100  # nesting of lists and mappings
MAX_SECONDS = 1e9  # larger durations overflow the timeouts of threading and select
SOCKET_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STEP_TYPES = ("python", "shell", "session")
SESSION_ACTIONS = ("create", "recreate", "send", "kill", "detach")
BACKENDS = ("screen", "tmux")
READY_KINDS = ("port", "log", "ctx", "delay")
RUNNER_KWARGS = ("stop", "log")  # passed by the runner when the function's signature names them

_LOC_DEPTH = 6  # locations are recorded this deep: enough for steps[i].ready.port, not for data
_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    _YAML + t for t in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)
_MERGE_TAG = _YAML + "merge"

Trail = tuple[Any, ...]  # keys and list indexes from the document root to a value
Loc = tuple[int, int]  # 1-based line and column


# --------------------------------------------------------------------------------------------
# Showing values in messages


def _show(value: Any) -> str:
    """A value as the user wrote it (YAML spelling), short enough for a one-line message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    return type(value).__name__


def _suggest(word: Any, options: Iterable[str]) -> str:
    if not isinstance(word, str) or len(word) > 200:
        return ""
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message, no traceback."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        text = exc.problem
    else:
        try:
            text = str(exc)
        except Exception:
            text = ""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _short_tag(tag: str | None) -> str:
    tag = tag or "?"
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


# --------------------------------------------------------------------------------------------
# YAML nodes -> plain Python values, with locations


class _Bad:
    """Stands in for a value already reported (bad tag, too deep) so it is not reported twice."""

    def __repr__(self) -> str:
        return "<invalid>"


_BAD = _Bad()


class _TooLarge(Exception):
    """The node budget ran out: give up on the document instead of building it."""


def _mark(node: yaml.Node) -> Loc:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _is_merge(key: yaml.Node) -> bool:
    return isinstance(key, yaml.ScalarNode) and key.tag == _MERGE_TAG


class _Converter:
    """Builds plain values from a node tree without recursion and without trusting any tag.

    Aliases are expanded (each use gets its own copy and path) but every value built counts
    against ``MAX_NODES``; recursive anchors end at ``MAX_DEPTH``.
    """

    def __init__(self) -> None:
        self.locs: dict[Trail, Loc] = {}
        self.key_locs: dict[Trail, Loc] = {}
        self.issues: dict[tuple[str, Loc], Trail] = {}  # deduplicated: aliases repeat nodes
        self.count = 0
        self._ctor = yaml.constructor.SafeConstructor()
        self._flat: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}
        self._busy: set[int] = set()

    def issue(self, message: str, trail: Trail, loc: Loc) -> None:
        self.issues.setdefault((message, loc), trail)

    def convert(self, root: yaml.Node) -> Any:
        box: list[Any] = [None]
        stack: list[tuple[yaml.Node, Trail, Any, Any]] = [(root, (), box, 0)]
        while stack:
            node, trail, holder, slot = stack.pop()
            holder[slot] = self._value(node, trail, stack)
        return box[0]

    def _tick(self, node: yaml.Node, trail: Trail, amount: int = 1) -> None:
        self.count += amount
        if self.count > MAX_NODES:
            self.issue(
                f"recipe too large: more than {MAX_NODES:,} values once aliases are expanded",
                trail,
                _mark(node),
            )
            raise _TooLarge

    def _value(self, node: yaml.Node, trail: Trail, stack: list[Any]) -> Any:
        self._tick(node, trail)
        if len(trail) <= _LOC_DEPTH:
            self.locs[trail] = _mark(node)
        if len(trail) > MAX_DEPTH:
            self.issue(f"nested more than {MAX_DEPTH} levels deep", trail, _mark(node))
            return _BAD
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, trail)
        if isinstance(node, yaml.SequenceNode) and node.tag == _YAML + "seq":
            items: list[Any] = [None] * len(node.value)
            for i in reversed(range(len(node.value))):
                stack.append((node.value[i], trail + (i,), items, i))
            return items
        if isinstance(node, yaml.MappingNode) and node.tag == _YAML + "map":
            return self._mapping(node, trail, stack)
        return self._bad_tag(node, trail)

    def _bad_tag(self, node: yaml.Node, trail: Trail) -> _Bad:
        self.issue(
            f"YAML tag '{_short_tag(node.tag)}' is not allowed: a recipe holds plain data "
            "(text, numbers, booleans, null, lists and mappings)",
            trail,
            _mark(node),
        )
        return _BAD

    def _scalar(self, node: yaml.ScalarNode, trail: Trail) -> Any:
        if node.tag == _MERGE_TAG:  # a lone "<<" outside a key is just text
            return node.value
        if node.tag not in _SCALAR_TAGS:
            return self._bad_tag(node, trail)
        construct = self._ctor.yaml_constructors[node.tag]
        try:
            value = construct(self._ctor, node)
        except Exception as exc:
            self.issue(
                f"invalid {_short_tag(node.tag)} value {_show(node.value)}: {_describe(exc)}",
                trail,
                _mark(node),
            )
            return _BAD
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.issue("text holds an invalid unicode character", trail, _mark(node))
                return _BAD
        return value

    def _mapping(self, node: yaml.MappingNode, trail: Trail, stack: list[Any]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first: dict[Any, Loc] = {}
        todo: list[tuple[yaml.Node, Trail, Any, Any]] = []
        for key_node, value_node, merged in self._pairs(node, trail):
            key = self._key(key_node, trail)
            if key is _BAD:
                continue
            if key in out:
                if not merged:  # explicit keys beat merged ones; two explicit ones are an error
                    self.issue(
                        f"duplicate key {_show(key)} (first at line {first[key][0]})",
                        trail + (key,),
                        _mark(key_node),
                    )
                continue
            out[key] = None
            first[key] = _mark(key_node)
            if len(trail) < _LOC_DEPTH:
                self.key_locs[trail + (key,)] = _mark(key_node)
            todo.append((value_node, trail + (key,), out, key))
        stack.extend(reversed(todo))
        return out

    def _key(self, node: yaml.Node, trail: Trail) -> Any:
        self._tick(node, trail)
        if not isinstance(node, yaml.ScalarNode):
            self.issue(
                "mapping keys must be plain values, not lists or mappings", trail, _mark(node)
            )
            return _BAD
        return self._scalar(node, trail)

    def _pairs(
        self, node: yaml.MappingNode, trail: Trail
    ) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's own pairs (duplicates kept, to be reported), then merged-in ones."""
        pairs = [(k, v, False) for k, v in node.value if not _is_merge(k)]
        for k, v in node.value:
            if _is_merge(k):
                for source in self._merge_sources(k, v, trail):
                    pairs.extend((mk, mv, True) for mk, mv in self._flatten(source, trail, 0))
        return pairs

    def _merge_sources(self, key: yaml.Node, value: yaml.Node, trail: Trail) -> list[yaml.Node]:
        def is_map(n: yaml.Node) -> bool:
            return isinstance(n, yaml.MappingNode) and n.tag == _YAML + "map"

        if is_map(value):
            return [value]
        if isinstance(value, yaml.SequenceNode) and all(is_map(n) for n in value.value):
            return list(value.value)
        self.issue("'<<' (merge) needs a mapping or a list of mappings", trail, _mark(key))
        return []

    def _flatten(
        self, node: yaml.MappingNode, trail: Trail, depth: int
    ) -> list[tuple[yaml.Node, yaml.Node]]:
        """A merge source's pairs, its own merges included, first key wins; memoised per node
        so merging the same anchor many times costs nothing extra."""
        cached = self._flat.get(id(node))
        if cached is not None:
            return cached
        if depth > MAX_DEPTH or id(node) in self._busy:
            self.issue("'<<' (merge) chain is recursive or too deep", trail, _mark(node))
            return []
        self._busy.add(id(node))
        seen: set[Any] = set()
        out: list[tuple[yaml.Node, yaml.Node]] = []
        own = [(k, v) for k, v in node.value if not _is_merge(k)]
        merged = [
            pair
            for k, v in node.value
            if _is_merge(k)
            for source in self._merge_sources(k, v, trail)
            for pair in self._flatten(source, trail, depth + 1)
        ]
        for k, v in own + merged:
            raw = (k.tag, k.value) if isinstance(k, yaml.ScalarNode) else id(k)
            if raw not in seen:
                seen.add(raw)
                out.append((k, v))
        self._busy.discard(id(node))
        self._flat[id(node)] = out
        self._tick(node, trail, len(out))
        return out


def _loader() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooDeep(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__("too deep")
        self.mark = mark


def _compose(text: str) -> yaml.Node | None:
    """Compose after an event pass that refuses deep nesting: the composer recurses per level
    and would hit the recursion limit (or the C stack) on ``[[[[...]]]]``."""
    depth = 0
    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, yaml.events.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark)
        elif isinstance(event, yaml.events.CollectionEndEvent):
            depth -= 1
    return yaml.compose(text, Loader=_loader())


def _yaml_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError):
        message = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
        if exc.problem and exc.context:
            message += f" ({exc.context})"
    else:
        message = f"invalid YAML: {_describe(exc).split(': ', 1)[-1]}"
    if mark is not None:
        return Problem(file, mark.line + 1, mark.column + 1, None, message)
    position = getattr(exc, "position", None)  # ReaderError: an offset into the text
    if isinstance(position, int) and _loader() is not yaml.SafeLoader:
        # libyaml counts bytes of the UTF-8 encoding, the Python reader characters
        position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
    if isinstance(position, int) and 0 <= position <= len(text):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        return Problem(file, line, column, None, message)
    return Problem(file, None, None, None, message)


# --------------------------------------------------------------------------------------------
# Field kinds: what a field accepts, how it is converted, and its JSON schema


class _Invalid(Exception):
    """Raised by a kind's converter. ``tail`` replaces the standard "must be ..., got ..." text;
    ``sub`` points below the field (a list item, a mapping key)."""

    def __init__(
        self,
        tail: str | None = None,
        sub: Trail = (),
        *,
        on_key: bool = False,
        silent: bool = False,
    ) -> None:
        super().__init__(tail)
        self.tail = tail
        self.sub = sub
        self.on_key = on_key
        self.silent = silent


@dataclass(frozen=True, eq=False)
class Kind:
    """A type of field value: its phrase in messages, its JSON schema and its converter."""

    phrase: str
    schema: dict[str, Any]
    convert: Callable[[Any], Any]


@dataclass(frozen=True, eq=False)
class Field:
    """One row of a field table. ``types`` None means every step type (or not a step field)."""

    name: str
    kind: Kind
    description: str
    types: frozenset[str] | None = None
    required: bool = False
    default: Any = None

    def applies(self, step_type: str | None) -> bool:
        return self.types is None or step_type is None or step_type in self.types

    def schema(self) -> dict[str, Any]:
        out = copy.deepcopy(self.kind.schema)
        out["description"] = self.description
        if self.default is not None:
            out["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        return out


def _check_bad(value: Any) -> None:
    if value is _BAD:
        raise _Invalid(silent=True)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid()
    return value


def _text(value: Any) -> str:
    """Text that ends up in a process (argv, environment, path): NUL cannot be passed there."""
    if not isinstance(value, str):
        raise _Invalid()
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    return value


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _Invalid()
    return value


def _is_control(char: str) -> bool:
    return char < " " or "\x7f" <= char <= "\x9f"


def valid_step_name(name: str) -> bool:
    """Names become log file names and CLI arguments, hence no '/', '.', '..' or controls."""
    return (
        1 <= len(name) <= 128
        and name not in (".", "..")
        and "/" not in name
        and not any(_is_control(c) for c in name)
    )


def _step_name(value: Any) -> str:
    if not isinstance(value, str) or not valid_step_name(value):
        raise _Invalid()
    return value


def _module(value: Any) -> str:
    if not isinstance(value, str) or not all(p.isidentifier() for p in value.split(".")):
        raise _Invalid()
    return value


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise _Invalid()
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid()
    return value


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid()
        if maximum is not None and value > maximum:
            raise _Invalid()
        return value

    return convert


def _seconds(*, positive: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if not _is_number(value) or value < 0 or (positive and value == 0):
            raise _Invalid()
        if value > MAX_SECONDS:
            raise _Invalid(f"must be at most {MAX_SECONDS:.0f} seconds, got {_show(value)}")
        return float(value)

    return convert


def _choice(options: tuple[str, ...]) -> Kind:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise _Invalid(
                f"must be one of {', '.join(options)}, got {_show(value)}{_suggest(value, options)}"
            )
        return value

    return Kind("one of " + ", ".join(options), {"type": "string", "enum": list(options)}, convert)


def _pattern(pattern: str, what: str) -> Kind:
    compiled = re.compile(pattern)

    def convert(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise _Invalid(f"must match {pattern} ({what}), got {_show(value)}")
        return value

    return Kind(f"text matching {pattern}", {"type": "string", "pattern": pattern}, convert)


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
        raise _Invalid()
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise _Invalid(
                f"has an invalid variable name {_show(key)} (text without '=' or NUL)",
                (key,),
                on_key=True,
            )
        try:
            out[key] = _scalar_text(item)
        except ValueError:
            hint = ' (write "" for an empty value)' if item is None else ""
            raise _Invalid(
                f"value of {key!r} must be text, a number or a boolean, got {_show(item)}{hint}",
                (key,),
            ) from None
    return out


def _args(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid()
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_scalar_text(item))
        except ValueError:
            raise _Invalid(
                f"item {i + 1} must be text, a number or a boolean, got {_show(item)}", (i,)
            ) from None
    return tuple(out)


def _env_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "=" not in value and "\x00" not in value


def _expose(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid()
    for i, item in enumerate(value):
        _check_bad(item)
        if not _env_name(item):
            raise _Invalid(
                f"item {i + 1} must be a ctx key usable as a variable name "
                f"(text without '=' or NUL), got {_show(item)}",
                (i,),
            )
    return tuple(value)


def _deps(value: Any) -> tuple[str, ...]:
    """A list of step names; one name alone is accepted as a one-item list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _Invalid()
    for i, item in enumerate(items):
        _check_bad(item)
        if not isinstance(item, str) or not item:
            raise _Invalid(f"item {i + 1} must be a step name, got {_show(item)}", (i,))
    return tuple(dict.fromkeys(items))


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid()
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(f"names must be text, got {_show(key)}", (key,), on_key=True)
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
        raise _Invalid()
    stack: list[tuple[Any, Trail]] = [(value, ())]
    while stack:
        item, sub = stack.pop()
        _check_bad(item)
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _Invalid(
                        f"must be JSON data, but key {_show(key)} is not text",
                        sub + (key,),
                        on_key=True,
                    )
                stack.append((child, sub + (key,)))
        elif isinstance(item, list):
            stack.extend((child, sub + (i,)) for i, child in enumerate(item))
        elif not _json_scalar(item):
            raise _Invalid(f"must be JSON data, but {_sub_text(sub)} is {_show(item)}", sub)
    return value


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid()
    try:
        re.compile(value)
    except Exception as exc:  # re.error, but also RecursionError/OverflowError on odd patterns
        raise _Invalid(f"is not a valid regular expression: {exc}") from None
    return value


def _mapping(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Invalid()
    return value


def _steps(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid()
    if not value:
        raise _Invalid("must list at least one step")
    return value


def _log(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    return _nonempty(value)


_NAME_RE = "^[^/\\u0000-\\u001f\\u007f-\\u009f]{1,128}$"
_ENV_NAME_RE = "^[^=\\u0000]+$"
_SCALAR_TYPES = ["string", "number", "boolean"]

STRING = Kind("text", {"type": "string"}, _string)
TEXT = Kind("text", {"type": "string"}, _text)
KEY = Kind("a non-empty ctx key", {"type": "string", "minLength": 1}, _nonempty)
BOOL = Kind("true or false", {"type": "boolean"}, _bool)
INT_GE0 = Kind("an integer >= 0", {"type": "integer", "minimum": 0}, _integer(0))
INT_GE1 = Kind("an integer >= 1", {"type": "integer", "minimum": 1}, _integer(1))
PORT = Kind(
    "a port number 1-65535", {"type": "integer", "minimum": 1, "maximum": 65535}, _integer(1, 65535)
)
SECONDS_GE0 = Kind(
    "a number >= 0",
    {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
    _seconds(positive=False),
)
SECONDS_GT0 = Kind(
    "a number > 0",
    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
    _seconds(positive=True),
)
STEP_NAME = Kind(
    "a step name (1-128 characters, no '/' or control characters, not '.' or '..')",
    {"type": "string", "pattern": _NAME_RE, "not": {"enum": [".", ".."]}},
    _step_name,
)
MODULE = Kind(
    "a dotted module path such as 'scriptlets.python.steps.ctx_init'",
    {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$"},
    _module,
)
IDENTIFIER = Kind(
    "a Python identifier", {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}, _identifier
)
DEPS = Kind(
    "a list of step names",
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}},
        ]
    },
    _deps,
)
ENV = Kind(
    "a mapping of variable names to text, numbers or booleans",
    {
        "type": "object",
        "propertyNames": {"pattern": _ENV_NAME_RE},
        "additionalProperties": {"type": _SCALAR_TYPES},
    },
    _env,
)
PARAMS = Kind("a mapping of parameter names to values", {"type": "object"}, _params)
CTX = Kind("a mapping of JSON data", {"type": "object"}, _json_data)
ARGS = Kind(
    "a list of text, numbers or booleans",
    {"type": "array", "items": {"type": _SCALAR_TYPES}},
    _args,
)
EXPOSE = Kind(
    "a list of ctx keys",
    {"type": "array", "items": {"type": "string", "pattern": _ENV_NAME_RE}},
    _expose,
)
REGEX = Kind("a regular expression", {"type": "string", "format": "regex"}, _regex)
LOG = Kind("true, false or a file path", {"type": ["boolean", "string"], "minLength": 1}, _log)
SESSION_NAME = _pattern(
    SESSION_NAME_PATTERN, "letters, digits, '_' and '-', at most 64, not starting with '-'"
)
SOCKET_NAME = _pattern(SOCKET_NAME_PATTERN, "letters, digits, '_', '.' and '-', at most 64")
STEPS = Kind(
    "a list of steps",
    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
    _steps,
)


def _table(*fields: Field) -> dict[str, Field]:
    return {f.name: f for f in fields}


def _object_schema(table: Mapping[str, Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: f.schema() for name, f in table.items()},
        "additionalProperties": False,
    }


READY_FIELDS = _table(
    Field("port", PORT, "ready once a TCP connection to host:port succeeds"),
    Field("log", REGEX, "ready once a line the step prints (stdout or stderr) matches"),
    Field("ctx", KEY, "ready once this ctx key exists"),
    Field("delay", SECONDS_GE0, "ready this many seconds after it started"),
    Field("host", KEY, "host for 'port'", default="127.0.0.1"),
    Field("timeout", SECONDS_GT0, "seconds to become ready before the step fails", default=30.0),
)

_ready_schema = _object_schema(READY_FIELDS)
_ready_schema["oneOf"] = [{"required": [kind]} for kind in READY_KINDS]
READY = Kind("a mapping with one of port, log, ctx or delay", _ready_schema, _mapping)

_PY, _SH, _SE = frozenset({"python"}), frozenset({"shell"}), frozenset({"session"})

STEP_FIELDS = _table(
    Field("name", STEP_NAME, "unique name of the step", required=True),
    Field("type", _choice(STEP_TYPES), "what the step runs", required=True),
    Field(
        "depends_on",
        DEPS,
        "steps this one waits for; absent: the previous step in the file; []: none",
    ),
    Field("background", BOOL, "the run does not wait for it to exit", default=False),
    Field("ready", READY, "when a background step counts as ready"),
    Field("grace", SECONDS_GE0, "seconds between SIGTERM and SIGKILL when stopped", default=5.0),
    Field("timeout", SECONDS_GT0, "seconds before the step is stopped and fails"),
    Field("retries", INT_GE0, "re-run a failed step up to this many more times", default=0),
    Field("retry_delay", SECONDS_GE0, "seconds to wait between retries", default=0.0),
    Field("continue_on_error", BOOL, "a failure blocks nothing and fails nothing", default=False),
    Field("env", ENV, "extra environment variables", default={}),
    Field("cwd", TEXT, "working directory"),
    Field("module", MODULE, "module path relative to the workspace", types=_PY, required=True),
    Field("function", IDENTIFIER, "function called as function(ctx, **params)", _PY, default="run"),
    Field("params", PARAMS, "keyword arguments for the function", _PY, default={}),
    Field("output", KEY, "ctx key that receives the return value", _PY),
    Field("cmd", TEXT, "program run without a shell, with 'args'", _SH),
    Field("args", ARGS, "arguments for 'cmd'", _SH, default=()),
    Field("run", TEXT, "script run with bash -c", _SH),
    Field("expose", EXPOSE, "ctx keys put in the step's environment", _SH, default=()),
    Field("action", _choice(SESSION_ACTIONS), "what to do with the session", _SE, required=True),
    Field("session", SESSION_NAME, "session name", _SE, required=True),
    Field("backend", _choice(BACKENDS), "terminal multiplexer", _SE, default="screen"),
    Field("command", TEXT, "text typed into the session (send, create, recreate)", _SE),
    Field(
        "log",
        LOG,
        "true: log file in the run dir; text: log file path (default: recreate logs, the rest do not)",
        _SE,
        default=None,
    ),
    Field("socket", SOCKET_NAME, "tmux -L socket name (tmux only)", _SE),
)

RECIPE_FIELDS = _table(
    Field("name", STRING, "recipe title", default=""),
    Field("description", STRING, "what the recipe does", default=""),
    Field("env", ENV, "environment for every shell step", default={}),
    Field("ctx", CTX, "initial ctx values", default={}),
    Field("jobs", INT_GE1, "at most this many steps running at once"),
    Field("steps", STEPS, "the steps, in order", required=True),
)


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the recipe format, built from the same field tables the
    loader checks against. Rules a schema cannot say (unique names, known dependencies, no
    cycles, importable modules) are left to ``orch-tui validate``."""
    step = _object_schema(STEP_FIELDS)
    step["required"] = [f.name for f in STEP_FIELDS.values() if f.required and f.types is None]
    step["allOf"] = [_type_rule(step_type) for step_type in STEP_TYPES]
    top = _object_schema(RECIPE_FIELDS)
    top["required"] = [f.name for f in RECIPE_FIELDS.values() if f.required]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "orch-tui recipe",
        "description": "A list of steps, or a mapping with 'steps' and recipe-wide settings.",
        "oneOf": [{"$ref": "#/$defs/steps"}, top],
        "$defs": {"step": step, "steps": copy.deepcopy(STEPS.schema)},
    }


def _type_rule(step_type: str) -> dict[str, Any]:
    fields = STEP_FIELDS.values()
    return {
        "if": {"properties": {"type": {"const": step_type}}, "required": ["type"]},
        "then": {
            "required": [f.name for f in fields if f.required and f.types and step_type in f.types],
            "properties": {f.name: False for f in fields if f.types and step_type not in f.types},
        },
    }


# --------------------------------------------------------------------------------------------
# Validation

_Who = tuple[str, bool] | None  # (step name or "step #3" label, is it a label)


@dataclass
class _Draft:
    """A step while it is being checked: the raw mapping, what converted cleanly, and where."""

    index: int
    name: str | None
    step_type: str | None
    trail: Trail
    line: int
    who: _Who
    data: dict[Any, Any]
    values: dict[str, Any]
    readiness: Readiness | None = None
    deps: tuple[str, ...] = ()


class _Validator:
    def __init__(self, file: str, conv: _Converter) -> None:
        self.file = file
        self.conv = conv
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.base: Trail = ()  # trail of the steps list
        self.whos: dict[int, _Who] = {}

    # -- reporting

    def where(self, trail: Trail, *, key: bool = False) -> tuple[int | None, int | None]:
        if key and trail in self.conv.key_locs:
            return self.conv.key_locs[trail]
        probe = trail
        while True:
            if probe in self.conv.locs:
                return self.conv.locs[probe]
            if not probe:
                return (None, None)
            probe = probe[:-1]

    def report(
        self,
        message: str,
        trail: Trail,
        who: _Who = None,
        *,
        key: bool = False,
        warning: bool = False,
    ) -> None:
        line, column = self.where(trail, key=key)
        step, is_label = who if who else (None, False)
        problem = Problem(self.file, line, column, step, message, is_label)
        (self.warnings if warning else self.problems).append(problem)

    def report_conversion(self) -> None:
        """Tag, duplicate-key and size problems found while building values, now that the
        step each one sits in is known."""
        n = len(self.base)
        for (message, (line, column)), trail in self.conv.issues.items():
            who = None
            if len(trail) > n and trail[:n] == self.base and isinstance(trail[n], int):
                who = self.whos.get(trail[n])
            step, is_label = who if who else (None, False)
            self.problems.append(Problem(self.file, line, column, step, message, is_label))

    # -- fields

    def check_fields(
        self,
        data: dict[Any, Any],
        trail: Trail,
        table: Mapping[str, Field],
        who: _Who,
        *,
        step_type: str | None = None,
        prefix: str = "",
    ) -> dict[str, Any]:
        """Check every key of ``data`` against ``table``; return what converted cleanly."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            here = trail + (key,)
            if not isinstance(key, str):
                self.report(f"field names must be text, got {_show(key)}", here, who, key=True)
                continue
            spec = table.get(key)
            if spec is None:
                self.report(
                    f"unknown field {_show(prefix + key)}{_suggest(key, table)}",
                    here,
                    who,
                    key=True,
                )
                continue
            if not spec.applies(step_type):
                owners = " and ".join(sorted(spec.types or ()))
                self.report(
                    f"field '{prefix}{key}' is for {owners} steps, not {step_type} steps",
                    here,
                    who,
                    key=True,
                )
                continue
            if value is _BAD:
                continue
            try:
                out[key] = spec.kind.convert(value)
            except _Invalid as bad:
                if not bad.silent:
                    tail = bad.tail or f"must be {spec.kind.phrase}, got {_show(value)}"
                    if isinstance(value, bool) and "text" in spec.kind.phrase:
                        tail += f' (YAML reads true/false/yes/no/on/off as booleans: quote it, {key}: "{str(value).lower()}")'
                    self.report(
                        f"field '{prefix}{key}' {tail}", here + bad.sub, who, key=bad.on_key
                    )
        for spec in table.values():
            needed = spec.types is None or step_type in spec.types  # unknown type: common only
            if spec.required and needed and spec.name not in data:
                self.report(f"missing required field '{prefix}{spec.name}'", trail, who)
        return out

    # -- document and steps

    def document(self, doc: Any) -> tuple[dict[str, Any], list[_Draft | None]]:
        steps: Any = []
        top: dict[str, Any] = {}
        if isinstance(doc, list):
            steps = doc
            if not steps:
                self.report("the recipe has no steps", ())
        elif isinstance(doc, dict):
            self.base = ("steps",)
            top = self.check_fields(doc, (), RECIPE_FIELDS, None)
            steps = top.get("steps", [])
        elif doc is not _BAD:
            self.report(
                f"a recipe is a list of steps or a mapping with 'steps:', got {_show(doc)}", ()
            )
        drafts = [self.step(i, data) for i, data in enumerate(steps)]
        return top, drafts

    def step(self, index: int, data: Any) -> _Draft | None:
        trail = self.base + (index,)
        label: _Who = (f"step #{index + 1}", True)
        if not isinstance(data, dict):
            self.whos[index] = label
            if data is not _BAD:
                self.report(f"a step must be a mapping of fields, got {_show(data)}", trail, label)
            return None
        raw_name, raw_type = data.get("name"), data.get("type")
        name = raw_name if isinstance(raw_name, str) and valid_step_name(raw_name) else None
        step_type = raw_type if isinstance(raw_type, str) and raw_type in STEP_TYPES else None
        who: _Who = (name, False) if name else label
        self.whos[index] = who
        values = self.check_fields(data, trail, STEP_FIELDS, who, step_type=step_type)
        line = self.where(trail)[0] or 1
        draft = _Draft(index, name, step_type, trail, line, who, data, values)
        self.ready(draft)
        if step_type == "shell":
            self.shell(draft)
        elif step_type == "session":
            self.session(draft)
        return draft

    def ready(self, d: _Draft) -> None:
        if "ready" in d.data and d.data.get("background") is not True:
            self.report(
                "field 'ready' needs 'background: true' (only background steps wait to be ready)",
                d.trail + ("ready",),
                d.who,
                key=True,
            )
        spec = d.values.get("ready")
        if spec is None:
            return
        trail = d.trail + ("ready",)
        before = len(self.problems)
        values = self.check_fields(spec, trail, READY_FIELDS, d.who, prefix="ready.")
        kinds = [k for k in READY_KINDS if k in spec]
        if not kinds:
            self.report(
                "field 'ready' needs one of port, log, ctx or delay", trail, d.who, key=True
            )
        elif len(kinds) > 1:
            self.report(
                f"field 'ready' takes one of port, log, ctx or delay, not {' and '.join(kinds)}",
                trail + (kinds[1],),
                d.who,
                key=True,
            )
        if "host" in spec and "port" not in spec:
            self.report(
                "field 'ready.host' only goes with ready.port", trail + ("host",), d.who, key=True
            )
        if len(self.problems) == before and len(kinds) == 1:
            extra = {k: values[k] for k in ("host", "timeout") if k in values}
            d.readiness = Readiness(kinds[0], values[kinds[0]], **extra)

    def shell(self, d: _Draft) -> None:
        has_cmd, has_run = "cmd" in d.data, "run" in d.data
        if not has_cmd and not has_run:
            self.report("a shell step needs 'cmd' (with 'args') or 'run'", d.trail, d.who)
        elif has_cmd and has_run:
            self.report("use either 'cmd' or 'run', not both", d.trail + ("run",), d.who, key=True)
        elif has_run and "args" in d.data:
            self.report(
                "field 'args' goes with 'cmd', not 'run'", d.trail + ("args",), d.who, key=True
            )

    def session(self, d: _Draft) -> None:
        action = d.values.get("action")
        if action == "send" and "command" not in d.data:
            self.report(
                "action 'send' needs 'command' (the text to type)",
                d.trail + ("action",),
                d.who,
            )
        if action in ("kill", "detach") and "command" in d.data:
            self.report(
                f"field 'command' is not used by action '{action}' "
                "(only by send, create and recreate)",
                d.trail + ("command",),
                d.who,
                key=True,
            )
        backend_ok = "backend" not in d.data or "backend" in d.values
        if "socket" in d.data and backend_ok and d.values.get("backend", "screen") == "screen":
            self.report(
                "field 'socket' is for the tmux backend only (this step uses screen)",
                d.trail + ("socket",),
                d.who,
                key=True,
            )

    # -- the graph

    def graph(self, drafts: list[_Draft | None]) -> None:
        first: dict[str, _Draft] = {}
        for d in drafts:
            if d is None or d.name is None:
                continue
            if d.name in first:
                self.report(
                    f"duplicate step name '{d.name}' (also at line {first[d.name].line})",
                    d.trail + ("name",),
                    d.who,
                )
            else:
                first[d.name] = d
        deps: dict[str, tuple[str, ...]] = {}
        for d in drafts:
            if d is None:
                continue
            d.deps = self.resolve(d, drafts, first)
            if d.name is not None and first[d.name] is d:
                deps[d.name] = d.deps
        cycle = find_cycle(deps)
        if cycle:
            head = first[cycle[0]]
            self.report("dependency cycle: " + " -> ".join(cycle), head.trail, head.who)

    def resolve(
        self, d: _Draft, drafts: list[_Draft | None], known: Mapping[str, _Draft]
    ) -> tuple[str, ...]:
        if "depends_on" not in d.data:
            prev = drafts[d.index - 1] if d.index > 0 else None
            return (prev.name,) if prev is not None and prev.name else ()
        raw = d.data["depends_on"]
        found = []
        for name in d.values.get("depends_on", ()):
            if name in known:
                found.append(name)
                continue
            sub = (raw.index(name),) if isinstance(raw, list) else ()
            self.report(
                f"depends_on: unknown step {_show(name)}{_suggest(name, known)}",
                d.trail + ("depends_on",) + sub,
                d.who,
            )
        return tuple(found)

    # -- what shell steps run, and where

    def paths(self, drafts: list[_Draft | None], workspace: Path, env: Mapping[str, str]) -> None:
        """Each shell step's ``cwd`` must be a folder and its ``cmd`` a program, or the run fails
        when it gets there. What is missing is an error when no step runs before this one (so
        nothing in the recipe can make it), and only a warning after other steps: ``cmd:
        build/app`` after a ``make`` step, or a ``cwd`` an earlier step creates, are normal, and
        an error would refuse such a recipe for good."""
        for d in drafts:
            if d is not None and d.step_type == "shell":
                self.shell_paths(d, workspace, env)

    def shell_paths(self, d: _Draft, workspace: Path, env: Mapping[str, str]) -> None:
        cwd, cmd = d.values.get("cwd"), d.values.get("cmd")
        warning = bool(d.deps)
        tail = ": fine only if a step before it makes it" if warning else ""
        folder = step_cwd(workspace, cwd)
        if cwd:
            problem = _folder_problem(folder)
            if problem is not None:
                base = (
                    "" if os.path.isabs(os.path.expanduser(cwd)) else f" (relative to {workspace})"
                )
                message = f"cwd: {_as_written(cwd)} {problem}{base}{tail}"
                self.report(message, d.trail + ("cwd",), d.who, warning=warning)
                if cmd and "/" in cmd and not os.path.isabs(cmd):
                    return  # a cmd relative to a folder that is not there: already said
        if cmd is None:
            return
        if "/" in cmd:
            problem = _program_problem(folder / cmd)
            base = "" if os.path.isabs(cmd) else f" (relative to cwd {folder})"
        else:
            search = {**os.environ, **env, **d.values.get("env", {})}.get("PATH", os.defpath)
            problem = None if shutil.which(cmd, path=search) else "not found on PATH"
            base = ""
        if problem is not None:
            message = f"cmd: {_as_written(cmd)} {problem}{base}{tail}"
            self.report(message, d.trail + ("cmd",), d.who, warning=warning)

    # -- python steps

    def imports(self, drafts: list[_Draft | None], workspace: Path) -> None:
        python = [d for d in drafts if d and d.step_type == "python" and "module" in d.values]
        if not python:
            return
        untrusted = workspace_problem(workspace)
        if untrusted is not None:
            first = python[0]
            message = (
                f"python steps are not imported from the workspace {workspace}: {untrusted}; "
                "keep the recipe in a folder of yours"
            )
            self.report(message, first.trail + ("module",), first.who)
            return
        # First, ahead of installed packages: a workspace's own ``scriptlets`` must win over
        # the one installed with orch-tui. Only a folder of this user's gets there.
        if str(workspace) not in sys.path:
            sys.path.insert(0, str(workspace))
        importlib.invalidate_caches()  # modules written a moment ago must be found
        for d in python:
            self.check_function(d)

    def check_function(self, d: _Draft) -> None:
        module = d.values["module"]
        at_module = d.trail + ("module",)
        try:
            mod = importlib.import_module(module)
        except (Exception, SystemExit) as exc:
            self.report(f"cannot import module '{module}': {_describe(exc)}", at_module, d.who)
            return
        if "function" in d.data and "function" not in d.values:
            return  # already reported as a bad value
        name = d.values.get("function", "run")
        at_function = d.trail + ("function",) if "function" in d.data else at_module
        try:
            func = getattr(mod, name)
        except AttributeError:
            public = [n for n in dir(mod) if not n.startswith("_")]
            self.report(
                f"module '{module}' has no function '{name}'{_suggest(name, public)}",
                at_function,
                d.who,
            )
            return
        except (Exception, SystemExit) as exc:
            self.report(f"cannot get '{module}.{name}': {_describe(exc)}", at_function, d.who)
            return
        if not callable(func):
            self.report(
                f"'{module}.{name}' is not callable (it is a {type(func).__name__})",
                at_function,
                d.who,
            )
            return
        if "params" not in d.data or "params" in d.values:
            self.signature(d, f"{module}.{name}", func)

    def signature(self, d: _Draft, qualname: str, func: Callable[..., Any]) -> None:
        """Check params the way the runner will call: ``func(ctx, **params)`` plus ``stop`` and
        ``log`` when the signature names them. The first positional parameter gets ctx,
        whatever it is called."""
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return  # builtins and C functions may have none: nothing to check against
        params: dict[str, Any] = d.values.get("params", {})
        at_params = d.trail + ("params",)
        where = at_params if "params" in d.data else d.trail + ("module",)
        kinds = inspect.Parameter
        plist = list(sig.parameters.values())
        positional = [
            p for p in plist if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        var_positional = any(p.kind == kinds.VAR_POSITIONAL for p in plist)
        var_keyword = any(p.kind == kinds.VAR_KEYWORD for p in plist)
        ctx_param = positional[0] if positional else None
        if ctx_param is None and not var_positional:
            self.report(f"{qualname}() must take ctx as its first argument", where, d.who)
            return
        keywords = {
            p.name: p
            for p in plist
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY) and p is not ctx_param
        }
        for key in params:
            here = at_params + (key,)
            if ctx_param is not None and key == ctx_param.name:
                self.report(
                    f"param '{key}' clashes with the ctx argument of {qualname}()",
                    here,
                    d.who,
                    key=True,
                )
            elif key in RUNNER_KWARGS and key in keywords:
                self.report(
                    f"param '{key}' is reserved: the runner passes it to {qualname}()",
                    here,
                    d.who,
                    key=True,
                )
            elif key not in keywords and not var_keyword:
                self.report(
                    f"unknown param {_show(key)} for {qualname}(){_suggest(key, keywords)}",
                    here,
                    d.who,
                    key=True,
                )
        for p in plist:
            if p is ctx_param or p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
                continue
            if p.default is not p.empty or p.name in params:
                continue
            if p.name in ("ctx", *RUNNER_KWARGS):
                continue
            self.report(f"missing param '{p.name}' required by {qualname}()", where, d.who)


def _as_written(path: str) -> str:
    """A path from the recipe in a message: as written when it is plain text, else escaped
    (no control or bidi characters reach the terminal); a line long at most."""
    shown = path if path.isprintable() and path.strip() == path and path else repr(path)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _folder_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a step's working directory, or None."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except OSError as exc:
        return f"cannot be used ({exc.strerror})"
    return None if stat.S_ISDIR(info.st_mode) else "is not a directory"


def _program_problem(path: Path) -> str | None:
    """What keeps ``path`` from being run as a program, or None."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "not found"
    except OSError as exc:
        return f"cannot be used ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a program"
    if not os.access(path, os.X_OK):
        return "is not executable (chmod +x it, or use run: instead of cmd:)"
    return None


# --------------------------------------------------------------------------------------------
# Loading


def workspace_of(folder: Path) -> Path | None:
    """The nearest of ``folder`` and its parents holding ``pyproject.toml`` or ``scriptlets/``
    (contract.md), or None. The one place this search is made: a recipe's module paths are
    relative to it, and ``orch-tui clean`` removes only the ``.orch`` folder it holds.

    The search ends at the user's home, and at a folder that is not this user's or root's or
    that others may write to (/tmp, a shared project): anyone could have dropped a
    ``pyproject.toml`` there to make it the workspace, and their ``psutil.py`` with it."""
    start = Path(os.path.abspath(folder))
    home = Path(os.path.abspath(os.path.expanduser("~")))
    for candidate in (start, *start.parents):
        try:
            if folder_problem(candidate.stat()) is not None:
                return None
            if (candidate / "pyproject.toml").is_file() or (candidate / "scriptlets").is_dir():
                return candidate
        except OSError:
            return None
        if candidate == home:
            return None
    return None


def workspace_problem(workspace: Path) -> str | None:
    """Why python steps must not be imported from ``workspace`` (put on ``sys.path``), or None.

    Its files become code run as this user, so nobody else may write to it (the sticky bit is
    no help: anyone can add a ``psutil.py`` to /tmp), nor to a folder above it (they could
    swap it for theirs)."""
    try:
        why = folder_problem(workspace.stat())
        return f"it is {why}" if why is not None else chain_problem(workspace)
    except OSError as exc:
        return f"it cannot be checked ({exc.strerror or exc})"


def find_workspace(recipe_path: Path) -> Path:
    """The workspace of a recipe: module paths in recipes are relative to it, wherever the
    command is run from; without one, the current directory."""
    return workspace_of(Path(os.path.abspath(recipe_path)).parent) or Path.cwd()


def step_cwd(workspace: Path, cwd: str | None) -> Path:
    """Where a shell step runs: ``cwd`` (``~`` expanded) relative to the workspace, by default
    the workspace itself. The validator and the runner both ask here, so they agree."""
    if not cwd:
        return workspace
    return (workspace / os.path.expanduser(cwd)).resolve()


def _locate(path: str | Path) -> tuple[Path, str]:
    """The absolute path, and the name to show: as given, or relative to the cwd if under it."""
    shown = str(path)
    try:
        given = Path(path)
        absolute = Path(os.path.abspath(given))
        if given.is_absolute():
            try:
                shown = str(absolute.relative_to(Path.cwd()))
            except ValueError:
                shown = str(given)
    except (TypeError, ValueError, OSError) as exc:
        raise RecipeError(
            [Problem(shown, None, None, None, f"invalid path: {_describe(exc)}")]
        ) from None
    return absolute, shown


def _read(path: Path, shown: str) -> str:
    def fail(message: str, line: int | None = None, column: int | None = None) -> RecipeError:
        return RecipeError([Problem(shown, line, column, None, message)])

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            # "." or ".." name no folder a reader can tell: add which one it is
            named = f" ({path})" if Path(shown).name in ("", "..") else ""
            raise fail(f"is a directory{named}, expected a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise fail("is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise fail(f"recipe file too large (over {MAX_FILE_BYTES:,} bytes)")
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read: {_describe(exc)}") from None
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"recipe file too large (over {MAX_FILE_BYTES:,} bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line, column) from None


def load_recipe(path: str | Path, *, check_imports: bool = True) -> Recipe:
    """Read and check a recipe; every problem found is raised together in one RecipeError.

    Nothing else escapes: the command line turns a RecipeError into exit code 2 without a
    traceback, so an unexpected failure here is reported as a recipe problem too.
    """
    shown = str(path)
    try:
        return _load(path, check_imports)
    except RecipeError:
        raise
    except Exception as exc:
        message = f"internal error while checking the recipe: {_describe(exc)}"
        raise RecipeError([Problem(shown, None, None, None, message)]) from exc


def _load(path: str | Path, check_imports: bool) -> Recipe:
    absolute, shown = _locate(path)
    text = _read(absolute, shown)
    try:
        root = _compose(text)
    except _TooDeep as exc:
        line, column = exc.mark.line + 1, exc.mark.column + 1
        problem = Problem(shown, line, column, None, f"nested more than {MAX_DEPTH} levels deep")
        raise RecipeError([problem]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([_yaml_problem(shown, text, exc)]) from None
    if root is None:
        raise RecipeError([Problem(shown, None, None, None, "the recipe is empty")])
    conv = _Converter()
    check = _Validator(shown, conv)
    try:
        doc = conv.convert(root)
    except _TooLarge:
        check.report_conversion()
        raise RecipeError(check.problems) from None
    top, drafts = check.document(doc)
    check.graph(drafts)
    workspace = find_workspace(absolute)
    if check_imports:
        check.imports(drafts, workspace)
    check.paths(drafts, workspace, top.get("env", {}))
    check.report_conversion()
    if check.problems:
        raise RecipeError(_in_file_order(check.problems))
    steps = tuple(_build_step(d) for d in drafts if d is not None)
    settings = {k: v for k, v in top.items() if k != "steps"}
    warnings = tuple(_in_file_order(check.warnings))
    return Recipe(path=absolute, workspace=workspace, steps=steps, warnings=warnings, **settings)


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line is not None, p.line or 0, p.column or 0))


def _build_step(d: _Draft) -> Step:
    values = dict(d.values)
    values.pop("ready", None)
    values.update(
        index=d.index,
        line=d.line,
        depends_on=d.deps,
        explicit_deps="depends_on" in d.data,
        ready=d.readiness,
    )
    return Step(**values)
