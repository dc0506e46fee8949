"""What is wrong with a recipe, said so that an editor can jump to it and a person can fix it.

A ``Problem`` names the file, line, column and step; a ``RecipeError`` carries every problem
found, because fixing a recipe one error per run is miserable. The helpers here word values the
way the user wrote them (YAML spelling, shortened) and offer "did you mean".
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Iterable
from typing import Any

import msgspec

Trail = tuple[Any, ...]  # keys and list indexes from the document root to a value


class Problem(msgspec.Struct, frozen=True, repr_omit_defaults=True):
    """One thing wrong with a recipe, located well enough for an editor to jump to it."""

    file: str
    line: int | None
    column: int | None
    step: str | None
    message: str
    # True when ``step`` is a stand-in such as "step #3" (the step has no usable name), so it is
    # shown as is rather than quoted as a name.
    step_is_label: bool = False

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


class Invalid(Exception):
    """A field value refused by its kind's check. ``tail`` replaces the standard "must be ...,
    got ..." text; ``sub`` points below the field (a list item, a mapping key); ``silent``: the
    value was already reported where it was read (a bad YAML tag), say nothing more."""

    def __init__(
        self,
        tail: str | None = None,
        sub: Trail = (),
        *,
        on_key: bool = False,
        silent: bool = False,
        hint: str = "",
    ) -> None:
        super().__init__(tail)
        self.tail = tail
        self.sub = sub
        self.on_key = on_key
        self.silent = silent
        self.hint = hint  # said after the standard "must be ..., got ..." text


class Bad:
    """Stands in for a value already reported (bad tag, too deep) so it is not reported twice."""

    def __repr__(self) -> str:
        return "<invalid>"


BAD = Bad()


def show(value: Any) -> str:
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


#: a step field of the tools a recipe is often moved from (process-compose, docker compose,
#: tmuxp, go-task, GitHub Actions) -> the field that does its work here, per step type (None:
#: any). Spelling is no guide there: tmuxp's start_directory was "did you mean 'restart_delay'?"
PEER_FIELDS: dict[str, dict[str | None, str]] = {
    **dict.fromkeys(
        ("working_dir", "working_directory", "workdir", "start_directory", "dir", "chdir"),
        {None: "cwd"},
    ),
    **dict.fromkeys(("environment", "environ"), {None: "env"}),
    **dict.fromkeys(("readiness_probe", "wait_for", "ready_check"), {None: "ready"}),
    **dict.fromkeys(("liveness_probe", "healthcheck", "health_check"), {None: "health"}),
    **dict.fromkeys(("availability", "restart_policy"), {None: "restart"}),
    **dict.fromkeys(("backoff_seconds", "backoff", "restart_backoff"), {None: "restart_delay"}),
    **dict.fromkeys(("is_daemon", "daemon", "detach"), {None: "background"}),
    **dict.fromkeys(("shutdown", "stop_grace_period", "kill_timeout"), {None: "grace"}),
    **dict.fromkeys(("depends", "needs", "deps", "after"), {None: "depends_on"}),
    **dict.fromkeys(
        ("shell_command", "script", "commands"),
        {"shell": "run", "session": "command", None: "run"},
    ),
    "command": {None: "run"},  # docker compose's, on a shell step (a session step's own field)
    "entrypoint": {None: "cmd"},
}
#: fields of peer tools with nothing like them here, and what to do instead
PEER_NOTES = {
    **dict.fromkeys(
        ("windows", "panes", "layout", "window_name", "focus"),
        "a session step makes one session, its one window running 'command': "
        "one step per session, action: send to type into it",
    ),
    "shell_command_before": "put it first in 'command'",
    "replicas": "one process per step: a step per copy, with YAML anchors in x- keys",
    "ports": "nothing is mapped: a step's processes listen on this machine itself; "
    "ready: {port: N} waits until one does",
    **dict.fromkeys(
        ("image", "build", "volumes", "container_name", "networks"),
        "a step runs on this machine, in no container: its program in 'run', or 'cmd' with 'args'",
    ),
}


def peer_hint(word: Any, step_type: str | None, fields: Iterable[str]) -> str:
    """ " (did you mean 'cwd'?)" for a field of a peer tool with a counterpart among ``fields``
    (those of the step's type), a note for one without; nothing for other words."""
    if not isinstance(word, str):
        return ""
    if step_type == "session" and word.lower() == "detach":  # not a service's 'background'
        return " (did you mean 'action: detach'?)"
    targets = PEER_FIELDS.get(word.lower())
    if targets is not None:
        target = targets.get(step_type, targets[None])
        return f" (did you mean '{target}'?)" if target in fields else ""
    note = PEER_NOTES.get(word.lower())
    return f" ({note})" if note else ""


def peer_typo_hint(word: Any, step_type: str | None, fields: Iterable[str]) -> str:
    """``peer_hint`` of the peer tool's field ``word`` is a typo of ('enviroment'), if any."""
    if not isinstance(word, str) or len(word) > 200:
        return ""
    import difflib

    match = difflib.get_close_matches(word.lower(), list(PEER_FIELDS), n=1, cutoff=0.85)
    return peer_hint(match[0], step_type, fields) if match else ""


def suggest(word: Any, options: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest option, or nothing."""
    if not isinstance(word, str) or len(word) > 200:
        return ""
    import difflib  # only a recipe with a problem needs it

    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def boolean_hint(field: str, value: Any) -> str:
    """YAML 1.1 reads an unquoted yes/no/on/off as a boolean: where text was meant, say how to
    quote it, since the value the user sees in the file is not the one that arrived."""
    if not isinstance(value, bool):
        return ""
    return (
        " (YAML reads true/false/yes/no/on/off as booleans: quote it, "
        f'{field}: "{str(value).lower()}")'
    )


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message, no traceback."""
    yaml = sys.modules.get("yaml")  # not imported: exc is no YAML error (a cached recipe)
    if yaml is not None and isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
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


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems as an editor lists them: by line and column, the whole-file ones first."""
    return sorted(problems, key=lambda p: (p.line is not None, p.line or 0, p.column or 0))
