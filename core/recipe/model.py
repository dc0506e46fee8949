"""The recipe model: one msgspec Struct per YAML shape, which is also what the runner reads.

A step is one of three Structs, a union tagged on ``type`` (``PythonStep``, ``ShellStep``,
``SessionStep``), with the fields every step has in ``StepBase``. The annotations are the single
source of each field: its type and bounds (checked by msgspec), its description (for
``orch-tui schema``), its default, and the kind (``core.recipe.kinds``) that words its problems.
The field tables the validator reads (``STEP_FIELDS`` ...) are derived from the Structs here,
so the checks, the schema and the model cannot drift apart.

A field absent from the YAML gets its default; ``null`` is never a value a recipe may write
(the ``| None`` of an optional field means "absent"), the validator refuses it.

No ``from __future__ import annotations`` here: msgspec would evaluate every annotation string
again (a compile each) when it first looks at a Struct, the main cost of importing this module.
"""

import functools
import operator
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

import msgspec
from msgspec import Meta

from core.recipe.kinds import (
    HEALTH_KINDS,
    READY_KINDS,
    Action,
    Args,
    Backend,
    Command,
    Count,
    Deps,
    Env,
    ExecutorUrl,
    Expose,
    Flag,
    HttpUrl,
    Identifier,
    JsonData,
    Key,
    Keys,
    LogSpec,
    ModulePath,
    Params,
    Port,
    Positive,
    PositiveSeconds,
    Regex,
    RestartPolicy,
    Seconds,
    SessionName,
    SocketName,
    StepName,
    StepType,
    String,
    Text,
    Where,
    check_steps,
)
from core.recipe.problems import Problem


def _about(text: str) -> Meta:
    return Meta(description=text)


class Readiness(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a background step counts as ready: one of port, log, ctx, delay, http or cmd."""

    port: Annotated[Port, _about("ready once a TCP connection to host:port succeeds")] | None = None
    log: (
        Annotated[Regex, _about("ready once a line the step prints (stdout or stderr) matches")]
        | None
    ) = None
    ctx: Annotated[Key, _about("ready once this ctx key exists")] | None = None
    delay: Annotated[Seconds, _about("ready this many seconds after it started")] | None = None
    http: Annotated[HttpUrl, _about("ready once a GET of this URL answers 2xx or 3xx")] | None = (
        None
    )
    cmd: Annotated[Command, _about("ready once this shell command (bash -c) exits 0")] | None = None
    host: Annotated[Key, _about("host for 'port'")] = "127.0.0.1"
    interval: Annotated[PositiveSeconds, _about("seconds between two tries of 'http' or 'cmd'")] = (
        0.25
    )
    timeout: Annotated[PositiveSeconds, _about("seconds to become ready before the step fails")] = (
        30.0
    )

    @property
    def kind(self) -> str:
        """Which condition: one of READY_KINDS (the validator allows one)."""
        return next(k for k in READY_KINDS if getattr(self, k) is not None)

    @property
    def value(self) -> Any:
        """The condition's value: a port number, a regex, a ctx key, seconds, a URL or a
        shell command."""
        return getattr(self, self.kind)


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a running service is checked: one of port, http or cmd, every ``interval``."""

    port: (
        Annotated[Port, _about("healthy while a TCP connection to 127.0.0.1:port succeeds")] | None
    ) = None
    http: (
        Annotated[HttpUrl, _about("healthy while a GET of this URL answers 2xx or 3xx")] | None
    ) = None
    cmd: Annotated[Command, _about("healthy while this shell command (bash -c) exits 0")] | None = (
        None
    )
    interval: Annotated[PositiveSeconds, _about("seconds between two checks")] = 5.0
    timeout: Annotated[PositiveSeconds, _about("seconds a check may take before it fails")] = 2.0
    failures: Annotated[
        Positive, _about("failed checks in a row that make the service unhealthy")
    ] = 3
    start_period: Annotated[
        Seconds, _about("seconds after the service is up during which failed checks do not count")
    ] = 0.0

    @property
    def kind(self) -> str:
        """Which check: "port", "http" or "cmd" (the validator allows one)."""
        return next(k for k in HEALTH_KINDS if getattr(self, k) is not None)

    @property
    def value(self) -> Any:
        """The check's value: a port number, a URL or a shell command."""
        return getattr(self, self.kind)


class StepBase(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """What every step has, whatever it runs."""

    type: ClassVar[str]
    name: Annotated[StepName, _about("unique name of the step")]
    depends_on: (
        Annotated[
            Deps,
            _about("steps this one waits for; absent: the previous step in the file; []: none"),
        ]
        | None
    ) = None  # after loading: always the resolved tuple
    background: Annotated[Flag, _about("the run does not wait for it to exit")] = False
    ready: (
        Annotated[
            Readiness,
            Meta(
                description="when a background step counts as ready",
                extra={"phrase": "a mapping with one of port, log, ctx, delay, http or cmd"},
            ),
        ]
        | None
    ) = None
    grace: Annotated[Seconds, _about("seconds between SIGTERM and SIGKILL when stopped")] = 5.0
    timeout: (
        Annotated[PositiveSeconds, _about("seconds before the step is stopped and fails")] | None
    ) = None
    retries: Annotated[Count, _about("re-run a failed step up to this many more times")] = 0
    retry_delay: Annotated[Seconds, _about("seconds to wait between retries")] = 0.0
    continue_on_error: Annotated[Flag, _about("a failure blocks nothing and fails nothing")] = False
    restart: Annotated[
        RestartPolicy,
        _about(
            "restart a background step when it ends on its own: no, on_failure, or always "
            "(also after a clean exit)"
        ),
    ] = "no"
    restart_delay: Annotated[
        Seconds, _about("seconds before a restart; doubles per restart in a row, up to 30")
    ] = 1.0
    max_restarts: (
        Annotated[
            Count,
            _about(
                "restarts in a row before the step fails "
                "(default: 5 for on_failure, no limit for always)"
            ),
        ]
        | None
    ) = None
    health: (
        Annotated[
            HealthCheck,
            Meta(
                description="how a running background step is checked; unhealthy: restarted",
                extra={"phrase": "a mapping with one of port, http or cmd"},
            ),
        ]
        | None
    ) = None
    env: Annotated[Env, _about("extra environment variables")] = {}
    cwd: Annotated[Text, _about("working directory")] | None = None
    # Set by the loader, never read from the YAML (LOADER_FIELDS):
    index: int = 0  # position in the file, 0-based
    line: int = 0  # 1-based line of the step's mapping in the file
    explicit_deps: bool = False  # depends_on was written in the YAML


class PythonStep(StepBase, tag="python"):
    """A python step: function(ctx, **params), called in the runner's process."""

    type: ClassVar[str] = "python"
    module: Annotated[ModulePath, _about("module path relative to the workspace")]
    function: Annotated[Identifier, _about("function called as function(ctx, **params)")] = "run"
    params: Annotated[Params, _about("keyword arguments for the function")] = {}
    output: Annotated[Key, _about("ctx key that receives the return value")] | None = None
    where: (
        Annotated[Where, _about("with an executor: on a cluster worker (the default) or local")]
        | None
    ) = None
    reads: (
        Annotated[Keys, _about("on a cluster: the only ctx keys shipped to it (default: all)")]
        | None
    ) = None

    @property
    def on_cluster(self) -> bool:
        """Whether it runs on the run's cluster, when the run has one."""
        return self.where != "local"


class ShellStep(StepBase, tag="shell"):
    """A shell step: 'cmd' with 'args' run without a shell, or 'run' with bash -c."""

    type: ClassVar[str] = "shell"
    cmd: Annotated[Text, _about("program run without a shell, with 'args'")] | None = None
    args: Annotated[Args, _about("arguments for 'cmd'")] = ()
    run: Annotated[Text, _about("script run with bash -c")] | None = None
    expose: Annotated[Expose, _about("ctx keys put in the step's environment")] = ()
    where: (
        Annotated[Where, _about("with an executor: local (the default) or on a cluster worker")]
        | None
    ) = None

    @property
    def on_cluster(self) -> bool:
        """Whether it runs on the run's cluster, when the run has one."""
        return self.where == "cluster"


class SessionStep(StepBase, tag="session"):
    """A session step: a GNU screen or tmux session created, sent to, detached or killed."""

    type: ClassVar[str] = "session"
    action: Annotated[Action, _about("what to do with the session")]
    session: Annotated[SessionName, _about("session name")]
    backend: Annotated[Backend, _about("terminal multiplexer")] = "screen"
    command: (
        Annotated[Text, _about("text typed into the session (send, create, recreate)")] | None
    ) = None
    log: (
        Annotated[
            LogSpec,
            _about(
                "true: log file in the run dir; text: log file path "
                "(default: recreate logs, the rest do not)"
            ),
        ]
        | None
    ) = None  # None: recreate logs (contract), the other actions do not
    socket: Annotated[SocketName, _about("tmux -L socket name (tmux only)")] | None = None
    on_cluster: ClassVar[bool] = False  # a session lives on this machine's multiplexer


Step = PythonStep | ShellStep | SessionStep
STEP_CLASSES: dict[str, type[StepBase]] = {c.type: c for c in (PythonStep, ShellStep, SessionStep)}


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Recipe-wide settings, beside the steps."""

    name: Annotated[String, _about("recipe title")] = ""
    description: Annotated[String, _about("what the recipe does")] = ""
    env: Annotated[Env, _about("environment for every shell step")] = {}
    ctx: Annotated[JsonData, _about("initial ctx values")] = {}
    jobs: Annotated[Positive, _about("at most this many steps running at once")] | None = None
    executor: (
        Annotated[
            ExecutorUrl,
            _about(
                "dask-local://N or dask://HOST:PORT: python steps (and where: cluster shell steps) run on Dask workers"
            ),
        ]
        | None
    ) = None


class RecipeFile(Settings, frozen=True, kw_only=True):
    """A recipe file in its mapping shape: the steps and recipe-wide settings."""

    steps: Annotated[
        tuple[Step, ...],
        Meta(
            min_length=1,
            description="the steps, in order",
            extra={"phrase": "a list of steps", "check": check_steps},
        ),
    ]


class Recipe(RecipeFile, frozen=True, kw_only=True):
    """A loaded recipe: the file's content, where it is, and what the runner should know."""

    path: Path  # absolute path of the YAML file
    workspace: Path  # python steps import from it; default cwd of shell steps
    # Doubts that do not stop a run (a cmd that a step before it may build)
    warnings: tuple[Problem, ...] = ()

    def step(self, name: str) -> Step:
        """The step called ``name`` (KeyError if there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.depends_on for s in self.steps}  # type: ignore[misc]

    @property
    def cluster_steps(self) -> tuple[Step, ...]:
        """The steps written ``where: cluster``: without an executor they run locally, which
        the user who wrote it does not expect, so validate and the run say so."""
        return tuple(s for s in self.steps if getattr(s, "where", None) == "cluster")


# --------------------------------------------------------------------------------------------
# Field tables, derived from the Structs: what the validator checks a mapping's keys against

LOADER_FIELDS = frozenset({"index", "line", "explicit_deps"})
# keys of the recipe or of a step that start with this are ignored: where YAML anchors live
EXTENSION_PREFIX = "x-"


class FieldSpec(msgspec.Struct, frozen=True):
    """One field as the validator sees it. ``types`` None means every step type (or not a step
    field); ``type`` is the annotation without its "absent" None."""

    name: str
    type: Any
    phrase: str
    description: str
    check: Callable[[Any], Any] | None
    required: bool = False
    types: frozenset[str] | None = None

    def applies(self, step_type: str | None) -> bool:
        return self.types is None or step_type is None or step_type in self.types


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return functools.reduce(operator.or_, rest)
    return annotation


def _extra(annotation: Any) -> tuple[dict[str, Any], str]:
    """The kind's ``extra`` (phrase, check) and the field's description, from the Metas."""
    extra: dict[str, Any] = {}
    description = ""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Meta):
            extra.update(meta.extra or {})
            description = meta.description or description
    return extra, description


def _spec(info: msgspec.structs.FieldInfo, types: frozenset[str] | None) -> FieldSpec:
    annotation = _without_none(info.type)
    extra, description = _extra(annotation)
    return FieldSpec(
        name=info.name,
        type=annotation,
        phrase=extra.get("phrase", ""),
        description=description,
        check=extra.get("check"),
        required=info.required,
        types=types,
    )


def _table(cls: type, types: frozenset[str] | None = None) -> dict[str, FieldSpec]:
    return {
        f.name: _spec(f, types) for f in msgspec.structs.fields(cls) if f.name not in LOADER_FIELDS
    }


def _step_fields() -> dict[str, FieldSpec]:
    extra, _ = _extra(StepType)
    common = _table(StepBase)
    out = {
        "name": common.pop("name"),
        "type": FieldSpec(
            "type", StepType, extra["phrase"], "what the step runs", extra["check"], required=True
        ),
        **common,
    }
    for cls in STEP_CLASSES.values():
        for n, spec in _table(cls, frozenset({cls.type})).items():
            if n not in out:
                out[n] = spec
            elif out[n].types is not None:  # a field of more than one type (``where``)
                out[n] = msgspec.structs.replace(out[n], types=out[n].types | spec.types)
    return out


STEP_FIELDS = _step_fields()
READY_FIELDS = _table(Readiness)
HEALTH_FIELDS = _table(HealthCheck)
RECIPE_FIELDS = _table(RecipeFile)
# Per Struct: the keys its mapping may hold, and the ones it must
KEYS: dict[type, tuple[frozenset[str], frozenset[str]]] = {
    cls: (
        frozenset(n for n, s in STEP_FIELDS.items() if s.applies(t)),
        frozenset(n for n, s in STEP_FIELDS.items() if s.required and s.applies(t)),
    )
    for t, cls in STEP_CLASSES.items()
}
KEYS[Readiness] = (frozenset(READY_FIELDS), frozenset())
KEYS[HealthCheck] = (frozenset(HEALTH_FIELDS), frozenset())
