"""The validator: every problem of a recipe found in one pass, each located in the file.

Each step mapping is converted through msgspec into its Struct in one call (the common case: a
good step costs a few microseconds, so 10,000 steps check in a blink). When that call refuses
it, msgspec stops at the first error; the step is then gone through field by field, each value
converted on its own, so one bad field never hides the next, and each refusal is worded by the
field's kind (``core.recipe.kinds``) rather than in msgspec's terms. Then the rules no type can
say: a shell step's cmd or run, a session's command and socket, ready conditions, unique names,
known dependencies, no cycle, and whether the cmd and cwd of shell steps exist.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import msgspec

from core.graph import find_cycle
from core.recipe.kinds import (
    HEALTH_KINDS,
    READY_KINDS,
    READY_OPTIONS,
    check_steps,
    valid_step_name,
)
from core.recipe.model import (
    EXTENSION_PREFIX,
    HEALTH_FIELDS,
    KEYS,
    READY_FIELDS,
    RECIPE_FIELDS,
    STEP_CLASSES,
    STEP_FIELDS,
    FieldSpec,
    HealthCheck,
    Readiness,
    Recipe,
    Step,
)
from core.recipe.problems import (
    BAD,
    Invalid,
    Problem,
    Trail,
    boolean_hint,
    peer_hint,
    peer_typo_hint,
    show,
    suggest,
)
from core.recipe.recipefile import Source, locate
from core.recipe.workspace import step_cwd
from core.text import listed

Who = tuple[str, bool] | None  # (step name or "step #3" label, is it a label)
#: what a ``where: cluster`` step is told when the run has no executor: a warning, not an
#: error, since the same recipe is often run with ``--executor`` and without
_NO_EXECUTOR = "where: cluster, but no executor (executor: in the recipe or --executor)"
_NAMED = 5  # steps named in the run's note; the rest counted
#: why a field needs ``background: true``, in its problem
#: all ``Validator.paths`` reads of a step's values (core.recipe.cache keeps only what the
#: checks of each load read)
PATHS_READ = ("cwd", "cmd", "env")
_NEEDS_BACKGROUND = {
    "ready": "only background steps wait to be ready",
    "health": "only a service that runs on is checked",
}


def _ancestors(deps: dict[str, tuple[str, ...]]) -> dict[str, set[str]]:
    """Every step's transitive dependencies (the graph has no cycle), without recursion: a
    recipe may chain thousands of steps."""
    from graphlib import TopologicalSorter

    out: dict[str, set[str]] = {}
    for name in TopologicalSorter(deps).static_order():
        out[name] = set()
        for dep in deps.get(name, ()):
            out[name] |= {dep} | out.get(dep, set())
    return out


class Draft(msgspec.Struct):
    """A step while it is being checked: the raw mapping, what converted cleanly, and where."""

    index: int
    name: str | None
    step_type: str | None
    trail: Trail
    line: int
    who: Who
    data: dict[Any, Any]
    values: dict[str, Any]
    deps: tuple[str, ...] = ()

    def build(self) -> Step:
        """The step the runner gets (only once the whole recipe checked clean)."""
        fields = dict(self.values)
        fields.update(
            index=self.index,
            line=self.line,
            depends_on=self.deps,
            explicit_deps="depends_on" in self.data,
        )
        return STEP_CLASSES[self.step_type or ""](**fields)


class Validator:
    """Collects the problems (and warnings) of one recipe file, located through its Source."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.file = source.shown
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.base: Trail = ()  # trail of the steps list
        self.whos: dict[int, Who] = {}
        self._found: dict[tuple[str, str], bool] = {}  # shutil.which, per program and PATH
        #: where an ``env``/``cwd`` that does nothing was said: an anchor merged into 500
        #: steps is said once, at the anchor, not 500 times
        self._idle_fields: set[tuple[int, int, str]] = set()

    # -- reporting

    def report(
        self,
        message: str,
        trail: Trail,
        who: Who = None,
        *,
        key: bool = False,
        warning: bool = False,
    ) -> None:
        line, column = self.source.where(trail, key=key)
        step, is_label = who if who else (None, False)
        problem = Problem(self.file, line, column, step, message, is_label)
        (self.warnings if warning else self.problems).append(problem)

    def report_conversion(self) -> None:
        """Tag, duplicate-key and size problems found while reading the file, now that the
        step each one sits in is known."""
        n = len(self.base)
        for (message, (line, column)), trail in self.source.issues.items():
            who = None
            if len(trail) > n and trail[:n] == self.base and isinstance(trail[n], int):
                who = self.whos.get(trail[n])
            step, is_label = who if who else (None, False)
            self.problems.append(Problem(self.file, line, column, step, message, is_label))

    # -- fields

    def fields(
        self,
        data: dict[Any, Any],
        trail: Trail,
        table: Mapping[str, FieldSpec],
        who: Who,
        *,
        cls: type | None = None,
        step_type: str | None = None,
        prefix: str = "",
        skip: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Check every key of ``data`` against ``table``; return what converted cleanly (the
        ``skip`` fields are left to the caller). ``cls``: the Struct a good mapping converts
        to in one go, the fast way for the common case."""
        if cls is not None and _fits(data, cls):
            try:
                whole = msgspec.convert(data, cls)
            except msgspec.ValidationError:
                pass  # now field by field, to find every problem and word it
            else:
                return self._checked(whole, data, trail, table, who, prefix, skip)
        return self._one_by_one(data, trail, table, who, step_type, prefix, skip)

    def _one_by_one(
        self,
        data: dict[Any, Any],
        trail: Trail,
        table: Mapping[str, FieldSpec],
        who: Who,
        step_type: str | None,
        prefix: str,
        skip: frozenset[str],
    ) -> dict[str, Any]:
        """Each key and value on its own, every problem reported."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            here = trail + (key,)
            if not isinstance(key, str):
                self.report(f"field names must be text, got {show(key)}", here, who, key=True)
                continue
            spec = table.get(key)
            if spec is None:
                # offer a field of this step's type: 'comand' in a shell step means 'cmd'
                fits = [name for name, spec in table.items() if spec.applies(step_type)]
                hint = (peer_hint(key, step_type, fits) if trail else "") or suggest(key, fits)
                if not hint and trail:
                    hint = peer_typo_hint(key, step_type, fits)
                if not hint and not trail:  # the recipe's own keys: likely a home for anchors
                    hint = f" (keys starting with {EXTENSION_PREFIX} are ignored: for YAML anchors)"
                message = f"unknown field {show(prefix + key)}{hint}"
                self.report(message, here, who, key=True)
                continue
            if not spec.applies(step_type):
                owners = " and ".join(sorted(spec.types or ()))
                message = f"field '{prefix}{key}' is for {owners} steps, not {step_type} steps"
                if trail:  # docker compose's 'command' on a shell step: 'run' does its work
                    fits = [name for name, spec in table.items() if spec.applies(step_type)]
                    message += peer_hint(key, step_type, fits)
                self.report(message, here, who, key=True)
                continue
            if value is BAD or key in skip:
                continue
            try:
                converted = _convert(spec, value)
            except Invalid as bad:
                self.refused(bad, spec, value, here, who, prefix)
                continue
            if key != "type":  # the Struct's class says it
                out[key] = converted
        for spec in table.values():
            needed = spec.types is None or step_type in spec.types  # unknown type: common only
            if spec.required and needed and spec.name not in data:
                self.report(f"missing required field '{prefix}{spec.name}'", trail, who)
        return out

    def _checked(
        self,
        whole: Any,
        data: dict[str, Any],
        trail: Trail,
        table: Mapping[str, FieldSpec],
        who: Who,
        prefix: str,
        skip: frozenset[str],
    ) -> dict[str, Any]:
        """The fields of a Struct msgspec accepted, through the checks of their kinds."""
        out: dict[str, Any] = {}
        for key in data:
            if key == "type" or key in skip:
                continue
            value, spec = getattr(whole, key), table[key]
            if spec.check is not None:
                try:
                    value = spec.check(value)
                except Invalid as bad:
                    self.refused(bad, spec, data[key], trail + (key,), who, prefix)
                    continue
            out[key] = value
        return out

    def refused(
        self, bad: Invalid, spec: FieldSpec, value: Any, here: Trail, who: Who, prefix: str = ""
    ) -> None:
        if bad.silent:
            return
        tail = (bad.tail or f"must be {spec.phrase}, got {show(value)}") + bad.hint
        if "text" in spec.phrase:
            tail += boolean_hint(spec.name, value)
        self.report(f"field '{prefix}{spec.name}' {tail}", here + bad.sub, who, key=bad.on_key)

    # -- document and steps

    def document(self, doc: Any) -> tuple[dict[str, Any], list[Draft | None]]:
        steps: Any = []
        top: dict[str, Any] = {}
        if isinstance(doc, list):
            steps = doc
            if not steps:
                self.report("the recipe has no steps", ())
        elif isinstance(doc, dict):
            doc = _without_extensions(doc)
            self.base = ("steps",)
            top = self.fields(doc, (), RECIPE_FIELDS, None, skip=frozenset({"steps"}))
            raw = doc.get("steps", BAD)
            if raw is not BAD:
                try:
                    steps = check_steps(raw)
                except Invalid as bad:
                    self.refused(bad, RECIPE_FIELDS["steps"], raw, ("steps",), None)
        elif doc is not BAD:
            self.report(
                f"a recipe is a list of steps or a mapping with 'steps:', got {show(doc)}", ()
            )
        drafts = [self.step(i, data) for i, data in enumerate(steps)]
        return top, drafts

    def step(self, index: int, data: Any) -> Draft | None:
        trail = self.base + (index,)
        label: Who = (f"step #{index + 1}", True)
        if not isinstance(data, dict):
            self.whos[index] = label
            if data is not BAD:
                self.report(f"a step must be a mapping of fields, got {show(data)}", trail, label)
            return None
        data = _without_extensions(data)
        raw_name, raw_type = data.get("name"), data.get("type")
        name = raw_name if isinstance(raw_name, str) and valid_step_name(raw_name) else None
        step_type = raw_type if isinstance(raw_type, str) and raw_type in STEP_CLASSES else None
        who: Who = (name, False) if name else label
        self.whos[index] = who
        values = self.fields(
            data,
            trail,
            STEP_FIELDS,
            who,
            cls=STEP_CLASSES.get(step_type or ""),
            step_type=step_type,
            skip=frozenset({"ready", "health"}),
        )
        line = self.source.where(trail)[0] or 1
        draft = Draft(index, name, step_type, trail, line, who, data, values)
        self.ready(draft)
        self.health(draft)
        self.restart(draft)
        self.env_and_cwd(draft)
        if step_type == "shell":
            self.shell(draft)
        elif step_type == "session":
            self.session(draft)
        return draft

    def ready(self, d: Draft) -> None:
        spec = self.condition(d, "ready", READY_FIELDS, Readiness, READY_KINDS)
        if spec is None:
            return
        for option, kinds in READY_OPTIONS.items():
            if option in spec and not any(kind in spec for kind in kinds):
                self.report(
                    f"field 'ready.{option}' only goes with "
                    + " or ".join(f"ready.{kind}" for kind in kinds),
                    d.trail + ("ready", option),
                    d.who,
                    key=True,
                )

    def health(self, d: Draft) -> None:
        self.condition(d, "health", HEALTH_FIELDS, HealthCheck, HEALTH_KINDS)

    def condition(
        self,
        d: Draft,
        field: str,
        table: Mapping[str, FieldSpec],
        cls: type[Readiness] | type[HealthCheck],
        kinds: tuple[str, ...],
    ) -> dict[str, Any] | None:
        """A mapping of exactly one of ``kinds`` and its options (``ready``, ``health``): for
        background steps only, as only they run on while others wait. Returns the mapping as
        written, for the caller's own rules; its Struct goes in ``d.values`` when it is good."""
        if field not in d.data:
            return None
        trail = d.trail + (field,)
        if d.data.get("background") is not True:
            self.report(
                f"field '{field}' needs 'background: true' ({_NEEDS_BACKGROUND[field]})",
                trail,
                d.who,
                key=True,
            )
        spec = d.data[field]
        if spec is BAD:
            return None
        if not isinstance(spec, dict):
            self.refused(Invalid(), STEP_FIELDS[field], spec, trail, d.who)
            return None
        before = len(self.problems)
        values = self.fields(spec, trail, table, d.who, cls=cls, prefix=f"{field}.")
        named = [k for k in kinds if k in spec]
        listed = ", ".join(kinds[:-1]) + f" or {kinds[-1]}"
        if not named:
            self.report(f"field '{field}' needs one of {listed}", trail, d.who, key=True)
        elif len(named) > 1:
            self.report(
                f"field '{field}' takes one of {listed}, not {' and '.join(named)}",
                trail + (named[1],),
                d.who,
                key=True,
            )
        if len(self.problems) == before and len(named) == 1:
            d.values[field] = cls(**values)  # else the recipe is refused: never built
        return spec

    def env_and_cwd(self, d: Draft) -> None:
        """``env`` and ``cwd`` are a process's as it starts: a shell step's, the shell of a
        session a step creates, a ``ready`` or ``health`` command's. A python step runs in the
        runner's process, which its steps share, and a session's shell that a step types into
        is running already: there the fields do nothing, said in a warning (an error refused
        recipes that merge one anchor, ``env`` in it, into every step)."""
        action = d.values.get("action")
        checks = [d.data.get(field) for field in ("ready", "health")]
        if d.step_type == "python" and any(isinstance(c, dict) and "cmd" in c for c in checks):
            return  # its ready or health command's
        for field in ("env", "cwd"):
            if field not in d.data:
                continue
            if d.step_type == "python":
                message = (
                    f"field '{field}' does nothing for a python step: it runs in the runner's "
                    "process, whose environment and working directory its steps share (pass "
                    "values in 'params', or make it a shell step)"
                )
            elif d.step_type == "session" and action not in (None, "create", "recreate"):
                message = (
                    f"field '{field}' does nothing with action {action}: it is for create or "
                    "recreate (the session's shell starts with it), and that shell is running "
                    "already (type a 'cd DIR' or 'export NAME=VALUE' into it with command:)"
                )
            else:
                continue
            where = (*self.source.where(d.trail + (field,), key=True), d.step_type or "")
            if where not in self._idle_fields:
                self._idle_fields.add(where)
                self.report(message, d.trail + (field,), d.who, key=True, warning=True)

    def restart(self, d: Draft) -> None:
        """``restart`` is for services (background steps; a foreground step has ``retries``),
        and its options need it."""
        policy = d.values.get("restart", "no")
        if "restart" in d.data and policy != "no":
            if d.data.get("background") is not True:
                self.report(
                    f"field 'restart: {policy}' needs 'background: true' (a service; "
                    "a foreground step is run again with 'retries')",
                    d.trail + ("restart",),
                    d.who,
                    key=True,
                )
            elif d.step_type == "session":
                self.report(
                    "field 'restart' is not for session steps (their action ends at once)",
                    d.trail + ("restart",),
                    d.who,
                    key=True,
                )
            if "retries" in d.data:
                self.report(
                    "field 'retries' does not go with 'restart' (a service is restarted: "
                    "use 'max_restarts')",
                    d.trail + ("retries",),
                    d.who,
                    key=True,
                )
        if "restart" not in d.data or d.values.get("restart") == "no":
            for option in ("restart_delay", "max_restarts"):
                if option in d.data:
                    self.report(
                        f"field '{option}' goes with 'restart: on_failure' or 'restart: always'",
                        d.trail + (option,),
                        d.who,
                        key=True,
                    )

    def shell(self, d: Draft) -> None:
        has_cmd, has_run = "cmd" in d.data, "run" in d.data
        if not has_cmd and not has_run:
            self.report("a shell step needs 'cmd' (with 'args') or 'run'", d.trail, d.who)
        elif has_cmd and has_run:
            self.report("use either 'cmd' or 'run', not both", d.trail + ("run",), d.who, key=True)
        elif has_run and "args" in d.data:
            self.report(
                "field 'args' goes with 'cmd', not 'run'", d.trail + ("args",), d.who, key=True
            )

    def session(self, d: Draft) -> None:
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

    def session_logs(self, drafts: list[Draft | None]) -> None:
        """Refuse two sessions logging into one file: their output would interleave there, and
        each session's pane would show the other's. One name on two tmux servers, or on screen
        and tmux, takes one default log (sessions/NAME.log). One session logged by several
        steps (created, later recreated) is one log."""
        logged = [d for d in drafts if d is not None and _may_log(d)]
        if len(logged) < 2:
            return
        from core.sessions.base import SessionError
        from core.sessions.step import session_log_path

        owners: dict[Path, Draft] = {}
        for d in logged:
            values = d.values
            try:
                path = session_log_path(
                    values.get("log"),
                    action=values["action"],
                    run_dir=_RUN,
                    session=values["session"],
                )
            except SessionError:
                continue  # not a log setting: its field's own check says so
            if path is None:
                continue
            other = owners.setdefault(path, d)
            if _session_of(other) != _session_of(d):
                shown = path.relative_to(_RUN) if path.is_relative_to(_RUN) else path
                self.report(
                    f"{_describe_session(d)} logs to {shown}, as {_describe_session(other)} of "
                    f"step {other.name!r} (line {other.line}) does: their output would mix; "
                    "give one of them its own 'log: PATH'",
                    d.trail + (("log",) if "log" in d.data else ()),
                    d.who,
                )

    # -- the graph

    def graph(self, drafts: list[Draft | None]) -> None:
        first: dict[str, Draft] = {}
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
        # a step whose name was refused is still a step: depending on it is not a second problem
        refused = {
            d.data["name"]
            for d in drafts
            if d is not None and d.name is None and isinstance(d.data.get("name"), str)
        }
        deps: dict[str, tuple[str, ...]] = {}
        for d in drafts:
            if d is None:
                continue
            d.deps = self.resolve(d, drafts, first, refused)
            if d.name is not None and first[d.name] is d:
                deps[d.name] = d.deps
        cycle = find_cycle(deps)
        if cycle:
            head = first[cycle[0]]
            self.report("dependency cycle: " + " -> ".join(cycle), head.trail, head.who)
        else:
            self.same_output(list(first.values()), deps)
        self.health_not_waited_for(list(first.values()))

    def health_not_waited_for(self, drafts: list[Draft]) -> None:
        """Warn about a service with ``health`` and no ``ready`` that steps depend on: they
        start as soon as it starts (a background step without ``ready`` is ready then), while
        one coming from docker compose or process-compose expects them to wait until it is
        healthy, and the first of them fails against a server not up yet."""
        dependents: dict[str, list[str]] = {}
        for d in drafts:
            for dep in d.deps:
                dependents.setdefault(dep, []).append(d.name or "")
        for d in drafts:
            waiting = dependents.get(d.name or "")
            if not waiting or "health" not in d.data or "ready" in d.data:
                continue
            if d.data.get("background") is not True:
                continue  # 'health' without background is refused already
            names = listed([f"'{name}'" for name in waiting], _NAMED)
            self.report(
                f"{'step' if len(waiting) == 1 else 'steps'} {names} will not wait for its "
                "health: a background step without 'ready' is ready as it starts ('health' is "
                f"checked from then on); give it a 'ready' for its dependents to wait until it "
                f"answers: {_ready_like(d.data['health'])}",
                d.trail + ("health",),
                d.who,
                key=True,
                warning=True,
            )

    def same_output(self, drafts: list[Draft], deps: dict[str, tuple[str, ...]]) -> None:
        """Warn about two steps that set the same ``output:`` key with no order between them:
        which value stays depends on timing (on a cluster, the later one fails with a ctx
        conflict). ``output:`` is the one write a recipe states; what a function writes inside
        is not known before it runs."""
        keys = [key for d in drafts if isinstance(key := d.values.get("output"), str)]
        if len(set(keys)) == len(keys):
            return  # no key set twice: no need for every step's ancestors (O(n^2) in a chain)
        before = _ancestors(deps)
        seen: dict[str, list[Draft]] = {}
        for d in drafts:
            key = d.values.get("output")
            if not isinstance(key, str):
                continue
            unordered = [o for o in seen.get(key, ()) if o.name not in before[d.name]]
            seen.setdefault(key, []).append(d)
            if unordered:
                other = unordered[0]
                self.report(
                    f"output {key!r} is also set by step {other.name!r} (line {other.line}), "
                    "and neither waits for the other",
                    d.trail + ("output",),
                    d.who,
                    warning=True,
                )

    def resolve(
        self,
        d: Draft,
        drafts: list[Draft | None],
        known: Mapping[str, Draft],
        refused: Collection[str],
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
            if name in refused:
                continue
            sub = (raw.index(name),) if isinstance(raw, list) else ()
            self.report(
                f"depends_on: unknown step {show(name)}{suggest(name, known)}",
                d.trail + ("depends_on",) + sub,
                d.who,
            )
        return tuple(found)

    # -- what shell steps run, and where

    def paths(self, drafts: list[Draft | None], workspace: Path, env: Mapping[str, str]) -> None:
        """Each shell step's ``cwd`` must be a folder and its ``cmd`` a program, or the run fails
        when it gets there. What is missing is an error when no step runs before this one (so
        nothing in the recipe can make it), and only a warning after other steps: ``cmd:
        build/app`` after a ``make`` step, or a ``cwd`` an earlier step creates, are normal, and
        an error would refuse such a recipe for good."""
        for d in drafts:
            if d is not None and d.step_type in ("shell", "session"):
                self.shell_paths(d, workspace, env)  # a session: its cwd (it has no cmd)

    def shell_paths(self, d: Draft, workspace: Path, env: Mapping[str, str]) -> None:
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
        search = _path_variable(d.values.get("env", {}), env)
        if "/" in cmd:
            problem = _program_problem(folder / cmd)
            base = "" if os.path.isabs(cmd) else f" (relative to cwd {folder})"
        else:
            problem = None if self._on_path(cmd, search) else "not found on PATH"
            base = ""
        if problem is not None:
            shown, hint = _as_written(cmd), ""
            spaced = cmd.strip() and any(c.isspace() for c in cmd)
            if problem in ("not found", "not found on PATH") and spaced:
                import json

                shown, hint = (
                    _as_written(json.dumps(cmd, ensure_ascii=False)),
                    one_program_hint(cmd),
                )
                if self._first_word_runs(cmd, folder, search):
                    # a command line where a program is meant: no step before makes it
                    warning, tail = False, ""
            message = f"cmd: {shown} {problem}{base}{hint}{tail}"
            self.report(message, d.trail + ("cmd",), d.who, warning=warning)

    def _first_word_runs(self, cmd: str, folder: Path, search: str) -> bool:
        """Whether ``cmd``'s first word is a program there is (on PATH, or a path from the
        step's cwd): then ``cmd: echo hi`` is a command line, not a program a step before it
        could make."""
        first = cmd.split(maxsplit=1)[0]
        if "/" in first:
            return _program_problem(folder / first) is None
        return self._on_path(first, search)

    def _on_path(self, cmd: str, search: str) -> bool:
        """``shutil.which``, asked once per program and PATH: a recipe runs the same few
        programs in many steps, and each search stats every PATH folder."""
        found = self._found.get((cmd, search))
        if found is None:
            import shutil  # it imports the compression modules: only a cmd on PATH needs it

            found = self._found[(cmd, search)] = shutil.which(cmd, path=search) is not None
        return found


def no_executor_warnings(recipe: Recipe, given: str) -> list[Problem]:
    """validate's warning for each ``where: cluster`` step of a recipe without ``executor:``
    (``given``: the recipe's path as the user gave it). Not part of ``Recipe.warnings``:
    whether a run has an executor is known only when it starts (``--executor``), so the run
    says it itself (``no_executor_note``)."""
    if recipe.executor is not None:
        return []
    shown = locate(given)[1]  # named as the other problems name it
    message = f"{_NO_EXECUTOR}: it runs locally"
    return [Problem(shown, s.line, None, s.name, message) for s in recipe.cluster_steps]


def no_executor_note(recipe: Recipe) -> str | None:
    """The one line a run without an executor says of its ``where: cluster`` steps, if any:
    the steps named (the first few, then how many more), since a recipe run both with and
    without ``--executor`` may mark many."""
    names = [f"'{s.name}'" for s in recipe.cluster_steps]
    if not names:
        return None
    if len(names) == 1:
        return f"step {names[0]}: {_NO_EXECUTOR}: it runs locally"
    return f"steps {listed(names, _NAMED)}: {_NO_EXECUTOR}: they run locally"


#: a stand-in for the run folder: session logs are compared as paths under it
_RUN = Path("/<run-dir>")


def _may_log(d: Draft) -> bool:
    """A session step that makes a session (and so may give it a log), its name valid."""
    made = d.values.get("action") in ("create", "recreate")
    return d.step_type == "session" and made and "session" in d.values


def _session_of(d: Draft) -> tuple[str, str | None, str]:
    """Which session a step acts on: backend, tmux socket (None: the default server) and name."""
    backend = d.values.get("backend", "screen")
    return backend, d.values.get("socket") if backend == "tmux" else None, d.values["session"]


def _describe_session(d: Draft) -> str:
    backend, socket, name = _session_of(d)
    return f"{backend} session {name!r}" + (f" (socket {socket})" if socket else "")


def _ready_like(health: Any) -> str:
    """The ``ready`` that waits for what a ``health`` check asks (its port, URL or command),
    or, for a check not written right, the conditions there are."""
    import json

    if isinstance(health, dict):
        named = [kind for kind in HEALTH_KINDS if kind in health]
        value = health.get(named[0]) if len(named) == 1 else None
        if isinstance(value, str) and value.strip():
            return f"ready: {{{named[0]}: {json.dumps(value)}}}, the check its health makes"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"ready: {{{named[0]}: {value}}}, the check its health makes"
    return '{port: N}, {http: URL}, {cmd: "..."} or {log: REGEX}'


def _without_extensions(data: dict[Any, Any]) -> dict[Any, Any]:
    """The recipe's or a step's mapping without its extension fields (``x-...``, as in
    docker-compose): the place YAML anchors live (``x-common: &common {...}``, then
    ``<<: *common``), ignored; any other unknown key stays an error."""
    if not any(_is_extension(key) for key in data):
        return data
    return {key: value for key, value in data.items() if not _is_extension(key)}


def _is_extension(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(EXTENSION_PREFIX)


def _path_variable(step_env: Mapping[str, str], recipe_env: Mapping[str, str]) -> str:
    """The PATH a shell step will get: its own env's, else the recipe's, else inherited."""
    for env in (step_env, recipe_env, os.environ):
        if "PATH" in env:
            return env["PATH"]
    return os.defpath


def _fits(data: dict[Any, Any], cls: type) -> bool:
    """Worth converting in one go: only known keys, the required ones there, no null."""
    allowed, required = KEYS[cls]
    keys = data.keys()
    return keys <= allowed and required <= keys and None not in data.values()


def _convert(spec: FieldSpec, value: Any) -> Any:
    """One field's value through msgspec, then its kind's check. A value msgspec refuses goes
    to the check to be worded (its own words, or the standard "must be ..." if it has none).
    ``null`` is never a value: a field is written, or absent."""
    try:
        if value is None:
            raise Invalid()
        converted = msgspec.convert(value, spec.type)
    except (Invalid, msgspec.ValidationError):
        if spec.check is not None:
            spec.check(value)
        raise Invalid() from None
    return spec.check(converted) if spec.check is not None else converted


def _as_written(path: str) -> str:
    """A path from the recipe in a message: as written when it is plain text, else escaped
    (no control or bidi characters reach the terminal); a line long at most."""
    shown = path if path.isprintable() and path.strip() == path and path else repr(path)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def one_program_hint(cmd: str) -> str:
    """What to write instead of ``cmd: echo hi``, the mistake a new user makes most: cmd
    names ONE program, run without a shell. The words are split here (as a shell would) only
    to show the fix; the step itself is never run split, so nothing is guessed."""
    import json
    import shlex

    run = f"run: {json.dumps(cmd, ensure_ascii=False)}"
    try:
        words = shlex.split(cmd)
    except ValueError:  # an unclosed quote: no split to show
        words = []
    if len(words) < 2:
        return f" (cmd is one program: its arguments go in args, or write {run} for a shell line)"
    program, args = _yaml_word(words[0]), ", ".join(_yaml_word(w) for w in words[1:])
    return (
        f" (cmd is one program: write cmd: {program} with args: [{args}],"
        f" or {run} for a shell line)"
    )


def _yaml_word(word: str) -> str:
    """A word as it would be written in a YAML flow list: plain when YAML reads it back as the
    same string, else double-quoted (``1``, ``true``, ``a,b`` or ``*.txt`` are read as something
    else). YAML itself is asked: its rules for plain words are too many to copy."""
    import json

    import yaml

    try:
        plain = yaml.safe_load(f"[{word}]") == [word]
    except yaml.YAMLError:
        plain = False
    return word if plain else json.dumps(word, ensure_ascii=False)


def _stat(path: Path, missing: str) -> os.stat_result | str:
    """The file's status, or why there is none: ``missing``, or what the system said."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return missing
    except OSError as exc:
        return f"cannot be used ({exc.strerror})"


def _folder_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a step's working directory, or None."""
    info = _stat(path, "does not exist")
    if isinstance(info, str):
        return info
    return None if stat.S_ISDIR(info.st_mode) else "is not a directory"


def _program_problem(path: Path) -> str | None:
    """What keeps ``path`` from being run as a program, or None."""
    info = _stat(path, "not found")
    if isinstance(info, str):
        return info
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a program"
    if not os.access(path, os.X_OK):
        return "is not executable (chmod +x it, or use run: instead of cmd:)"
    return None
