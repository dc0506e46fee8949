"""Recipes: the YAML file, loaded safely and checked whole before anything runs.

(The loader and validator below the model are being written; the model is the interface the
runner uses.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    log: bool | str = False
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

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.depends_on for s in self.steps}
